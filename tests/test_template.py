"""The template passes cfn-lint (with the serverless rules) and both SAM validations, and builds."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "AWS_DEFAULT_REGION": "us-east-1",
    "SAM_CLI_TELEMETRY": "0",
    "PATH": f"{BIN}:{os.environ['PATH']}",
}
# Plain `sam validate` must work without credentials: it only needs a region.
for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    ENV.pop(name, None)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_cfn_lint_with_serverless_rules_is_clean():
    result = run(str(BIN / "cfn-lint"), "template.yaml", "-a", "cfn_lint_serverless.rules")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("flags", [["--lint"], []], ids=["lint", "plain"])
def test_sam_validate_is_clean(flags):
    result = run(str(BIN / "sam"), "validate", "--template", "template.yaml", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_sam_build_makes_small_packages_without_boto3(tmp_path):
    if not shutil.which("python3.13", path=ENV["PATH"]):
        pytest.fail("sam build needs python3.13 on PATH")
    build_dir = tmp_path / "build"
    result = run(
        str(BIN / "sam"),
        "build",
        "--template",
        "template.yaml",
        "--build-dir",
        str(build_dir),
        "--cache-dir",
        str(ROOT / ".aws-sam" / "cache"),
        "--cached",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    functions = [d for d in build_dir.iterdir() if d.is_dir() and d.name.endswith("Function")]
    assert {f.name for f in functions} == {
        "S3UploadFunction",
        "SqsRequestFunction",
        "PollExecutionFunction",
        "FinishRequestFunction",
        "SweeperFunction",
    }
    for function in functions:
        assert (function / "handlers").is_dir() and (function / "shared" / "routing_rules.yaml").is_file()
        assert not (function / "boto3").exists() and not (function / "botocore").exists(), function.name
        size_mb = sum(p.stat().st_size for p in function.rglob("*") if p.is_file()) / 1e6
        print(f"{function.name}: {size_mb:.1f} MB")
        assert size_mb < 25, f"{function.name} is {size_mb:.1f} MB"
