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


def template_built_once(directory: Path) -> Path:
    """template.yaml without the functions' checkov notes, its relative paths made absolute, in `directory`.

    sam build builds functions whose Metadata differ separately, even with the same code and requirements;
    the checkov notes (skip reasons, not build settings) differ between the four functions, so template.yaml
    takes three builds of the same package, this one takes one.
    """
    from samcli.yamlhelper import yaml_dump, yaml_parse

    template = yaml_parse((ROOT / "template.yaml").read_text())
    template["Globals"]["Function"]["CodeUri"] = str(ROOT / template["Globals"]["Function"]["CodeUri"])
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri"):
            if isinstance(properties.get(key), str):
                properties[key] = str(ROOT / properties[key])
        if resource["Type"] == "AWS::Serverless::Function":
            resource.get("Metadata", {}).pop("checkov", None)
    path = directory / "template.yaml"
    path.write_text(yaml_dump(template))
    return path


@pytest.mark.slow
def test_sam_build_makes_small_packages_without_boto3(tmp_path):
    if not shutil.which("python3.13", path=ENV["PATH"]):
        pytest.fail("sam build needs python3.13 on PATH")
    build_dir = tmp_path / "build"
    result = run(
        str(BIN / "sam"),
        "build",
        "--template",
        str(template_built_once(tmp_path)),
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
        "ReprocessFunction",
    }
    for function in functions:
        assert (function / "handlers").is_dir() and (function / "shared" / "routing_rules.yaml").is_file()
        assert not (function / "boto3").exists() and not (function / "botocore").exists(), function.name
        size_mb = sum(p.stat().st_size for p in function.rglob("*") if p.is_file()) / 1e6
        print(f"{function.name}: {size_mb:.1f} MB")
        assert size_mb < 25, f"{function.name} is {size_mb:.1f} MB"
