"""Cold-start import time of each Lambda handler module, side by side with `import boto3` in the same run.

Every figure comes from a fresh python process, as a Lambda cold start does. The child times only the import
statement with time.perf_counter, so interpreter start-up is left out of "import ms"; the whole-process wall
time (start-up, import and exit) is reported beside it. `pass` is the floor: what timing nothing costs.

    python bench/cold_start.py                 # the table, then one JSON line
    python bench/cold_start.py --top 25        # slowest imports of one handler (-X importtime), no JSON
    python bench/cold_start.py --top 25 --handler sqs_request
    python bench/cold_start.py --dev-venv      # with the whole development environment (see below)

By default the child sees only what a deployed function sees: `python -S` on src/ plus links to only
src/requirements.txt and boto3 with their dependencies (boto3 standing for the Lambda runtime's own copy),
resolved from the installed metadata. --dev-venv uses the development virtual environment instead
(PYTHONPATH=src); it holds packages a deployed function never has, and some change what gets imported:
httpx loads its command-line client when click and rich are installed, botocore loads awscrt and pyOpenSSL
when they are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ("s3_upload", "sqs_request", "poll_execution", "finish_request")
TARGET_RATIO = 1.5
# The child prints how long the statement took; `{statement}` is the import (or `pass`).
CHILD = "import time\nt = time.perf_counter()\n{statement}\nprint((time.perf_counter() - t) * 1000)\n"
# The Lambda Python runtime provides boto3 (with botocore, s3transfer and their dependencies) itself.
RUNTIME_PROVIDED = ("boto3",)


@dataclass(frozen=True)
class Interpreter:
    flags: tuple[str, ...]
    env: dict[str, str]
    site: str  # "dev-venv" or "lambda-like", reported with the figures


def lambda_env(pycache: str, python_path: str) -> dict[str, str]:
    """A clean environment close to Lambda's: nothing from the caller leaks in (notably the Makefile's
    PYTHONDONTWRITEBYTECODE, which would make every run compile from source, unlike a deployed package)."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": python_path,
        "POWERTOOLS_SERVICE_NAME": "cold-start-bench",
        "POWERTOOLS_METRICS_NAMESPACE": "ColdStartBench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml's Globals set it
        # Byte code goes to a private cache, not into src/ where others are editing; the warm-up fills it.
        "PYTHONPYCACHEPREFIX": pycache,
    }


def distributions(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that `requirements` need, dependencies included, extras left out."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        requirement = Requirement(todo.pop())
        # Evaluating with no extra drops "; extra == 'cli'" dependencies, as a plain install does.
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = metadata.distribution(requirement.name)
            todo.extend(found[name].requires or [])
    return list(found.values())


def link_lambda_site(site: Path) -> None:
    """Links every top-level module or package of the deployed function's distributions into `site`."""
    lines = (ROOT / "src" / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines]
    requirements = [r for r in requirements if r] + list(RUNTIME_PROVIDED)
    for dist in distributions(requirements):
        top_level = {Path(str(f)).parts[0] for f in dist.files or []}
        for name in top_level:
            if name.endswith((".dist-info", ".data", ".pth")) or name in ("..", "__pycache__"):
                continue
            target = Path(dist.locate_file(name)).resolve()
            if target.exists() and not (site / name).exists():
                (site / name).symlink_to(target)


def interpreter(scratch: Path, lambda_like: bool) -> Interpreter:
    src = str(ROOT / "src")
    if not lambda_like:
        return Interpreter((), lambda_env(str(scratch / "pycache"), src), "dev-venv")
    site = scratch / "site"
    site.mkdir()
    link_lambda_site(site)
    # -S: no site-packages at all, so only src/ and the linked packages can be imported.
    return Interpreter(("-S",), lambda_env(str(scratch / "pycache"), f"{src}:{site}"), "lambda-like")


# What a handler's import is made of, each layer on top of the one before: so that the report can say what
# the parts cost. Every handler imports all of these (Settings is the pydantic model every function builds).
LAYERS = {
    "+ Logger": "import boto3; from aws_lambda_powertools.logging import Logger; Logger()",
    "+ httpx": "import boto3; from aws_lambda_powertools.logging import Logger; Logger(); import httpx",
    "+ pydantic Settings": (
        "import boto3; from aws_lambda_powertools.logging import Logger; Logger(); import httpx;"
        " import shared.config"
    ),
}


def targets() -> dict[str, str]:
    found = {"pass": "pass", "boto3": "import boto3", **LAYERS}
    found.update({name: f"import handlers.{name}" for name in HANDLERS})
    return found


def run_child(statement: str, python: Interpreter) -> tuple[float, float]:
    """(import ms measured in the child, whole-process wall ms measured here)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *python.flags, "-c", CHILD.format(statement=statement)],
        env=python.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"`{statement}` failed in a fresh process:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1]), wall_ms


def measure(runs: int, python: Interpreter) -> dict[str, dict[str, float]]:
    statements = targets()
    for statement in statements.values():  # warm-up: fills the byte-code cache, untimed
        run_child(statement, python)
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _ in range(runs):
        # Round-robin, so drift on a busy machine touches every target alike.
        for name, statement in statements.items():
            samples[name].append(run_child(statement, python))
    figures = {}
    for name, pairs in samples.items():
        imports = [p[0] for p in pairs]
        figures[name] = {
            "ms": statistics.median(imports),
            "min_ms": min(imports),
            "max_ms": max(imports),
            "process_ms": statistics.median(p[1] for p in pairs),
        }
    return figures


def report(runs: int, site: str, figures: dict[str, dict[str, float]]) -> dict:
    boto3_ms = figures["boto3"]["ms"]
    print(f"import time in a fresh python process ({site}), median of {runs} runs (min..max), warm .pyc")
    print(f"{'module':<26}{'import ms':>11}{'min..max':>18}{'process ms':>12}{'x boto3':>9}")
    for name, f in figures.items():
        label = f"handlers.{name}" if name in HANDLERS else name
        ratio = f"{f['ms'] / boto3_ms:.2f}" if name != "pass" else "-"
        spread = f"{f['min_ms']:.1f}..{f['max_ms']:.1f}"
        print(f"{label:<26}{f['ms']:>11.1f}{spread:>18}{f['process_ms']:>12.1f}{ratio:>9}")
    handlers = {
        name: {
            "ms": round(figures[name]["ms"], 1),
            "ratio_to_boto3": round(figures[name]["ms"] / boto3_ms, 2),
            "process_ms": round(figures[name]["process_ms"], 1),
        }
        for name in HANDLERS
    }
    over = [name for name, h in handlers.items() if h["ratio_to_boto3"] > TARGET_RATIO]
    print(f"target: each handler at most {TARGET_RATIO}x boto3; over it: {', '.join(over) or 'none'}")
    return {
        "runs": runs,
        "site": site,
        "boto3_ms": round(boto3_ms, 1),
        "boto3_process_ms": round(figures["boto3"]["process_ms"], 1),
        "floor_ms": round(figures["pass"]["ms"], 3),
        "floor_process_ms": round(figures["pass"]["process_ms"], 1),
        "handlers": handlers,
        "layers_ms": {name: round(figures[name]["ms"], 1) for name in LAYERS},
        "target_ratio": TARGET_RATIO,
        "over_target": over,
    }


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) per line of `-X importtime` output."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        rows.append((name.strip(), int(self_us), int(cumulative_us)))
    return rows


def top_imports(handler: str, count: int, python: Interpreter) -> None:
    statement = f"import handlers.{handler}" if handler in HANDLERS else f"import {handler}"
    command = [sys.executable, *python.flags, "-X", "importtime", "-c", statement]
    for _ in range(2):  # the first run warms the byte-code cache; the second is the one shown
        done = subprocess.run(command, env=python.env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`{statement}` failed:\n{done.stderr}")
    rows = parse_importtime(done.stderr)
    total_ms = sum(r[1] for r in rows) / 1000
    print(
        f"{statement} ({python.site}): {len(rows)} modules, {total_ms:.1f} ms of import work (-X importtime adds overhead)"
    )

    # What to cut: self time summed per top-level package (a distribution, roughly).
    by_package: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, self_us, _ in rows:
        entry = by_package[name.split(".")[0]]
        entry[0] += self_us
        entry[1] += 1
    print(f"\nslowest top-level packages (sum of self time of their modules), top {count}")
    print(f"{'package':<40}{'ms':>9}{'share':>8}{'modules':>9}")
    for package, (self_us, modules) in sorted(by_package.items(), key=lambda kv: -kv[1][0])[:count]:
        print(f"{package:<40}{self_us / 1000:>9.1f}{self_us / 1000 / total_ms:>8.0%}{modules:>9}")

    # Who pulls them in: the cumulative time of each module includes everything it imported first.
    print(f"\nslowest modules by cumulative time (includes what they import), top {count}")
    print(f"{'module':<60}{'cumul ms':>10}{'self ms':>9}")
    for name, self_us, cumulative_us in sorted(rows, key=lambda r: -r[2])[:count]:
        print(f"{name:<60}{cumulative_us / 1000:>10.1f}{self_us / 1000:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9, help="timed runs per module (default 9)")
    parser.add_argument("--top", type=int, metavar="N", help="print the N slowest imports of --handler")
    parser.add_argument("--handler", default="s3_upload", help=f"for --top: one of {', '.join(HANDLERS)}")
    parser.add_argument(
        "--dev-venv",
        action="store_true",
        help="the whole development environment, not a Lambda's (see above)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-bench-") as scratch:
        python = interpreter(Path(scratch), lambda_like=not args.dev_venv)
        if args.top:
            top_imports(args.handler, args.top, python)
            return
        summary = report(args.runs, python.site, measure(args.runs, python))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
