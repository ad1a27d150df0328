"""Cold start of the API package: ``import app`` with and without precompiled bytecode.

Builds the API zip as ``chalice package`` + :func:`deploy.packaging.add_bytecode`
make it, unpacks it twice (as built, and with every ``.pyc`` left out), makes
both copies read-only like Lambda's ``/var/task``, and imports the handler the
way the runtime does: a fresh CPython 3.12 per run, bytecode writing off,
only the standard library plus the task directory and a "runtime" directory
holding boto3 and s3transfer (Lambda's ``/var/runtime`` provides those,
precompiled), and the function's environment variables from the generated
template. Prints the median of N runs of each (in-process import time and
whole-process wall time) and their ratio.

    .venv/bin/python bench/cold_start.py [--runs 5] [--zip build/api/deployment.zip]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.chalice_config import write_policy  # noqa: E402
from deploy.packaging import copy_apps, package_app, require_lambda_python  # noqa: E402

# Packages the Lambda runtime provides next to the function (boto3's own stack).
RUNTIME_PACKAGES = ("boto3", "s3transfer")

_IMPORT = (
    "import sys, time; sys.path[:0] = [{task!r}, {runtime!r}]; "
    "t = time.perf_counter(); import app; print(time.perf_counter() - t)"
)


def unpack(zip_path: Path, dest: Path, *, with_bytecode: bool) -> Path:
    """Unpack the zip into ``dest`` (without its .pyc if asked) and make it read-only.

    Keeps each entry's Unix mode bits as Lambda does (``zipfile`` alone drops them).
    """
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if with_bytecode or not info.filename.endswith(".pyc"):
                path = Path(zf.extract(info, dest))
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    path.chmod(mode)
    make_read_only(dest)
    return dest


def make_read_only(root: Path) -> None:
    """chmod -R a-w, like Lambda's /var/task."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def make_writable(root: Path) -> None:
    """Undo :func:`make_read_only`, so the folder can be removed."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def runtime_dir(dest: Path) -> Path:
    """A stand-in for Lambda's /var/runtime: boto3 and s3transfer, precompiled as there."""
    import importlib

    for name in RUNTIME_PACKAGES:
        package = Path(importlib.import_module(name).__file__ or "").parent
        shutil.copytree(package, dest / name)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest)], check=True)
    return dest


def lambda_env(template: Path, function: str = "APIHandler") -> dict[str, str]:
    """The function's environment as Lambda would set it (from the SAM template)."""
    resource = json.loads(template.read_text())["Resources"][function]["Properties"]
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "vidline-api-dev",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(resource.get("MemorySize", 128)),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    }
    env.update(resource.get("Environment", {}).get("Variables", {}))
    return {key: value for key, value in env.items() if isinstance(value, str)}


def time_import(task: Path, runtime: Path, env: dict[str, str]) -> tuple[float, float]:
    """One cold import of the handler module: (import seconds, process wall seconds)."""
    # -I: no user site, no PYTHON* variables, no cwd on sys.path; -S: no site-packages;
    # -B: write no bytecode (Lambda's /var/task is read-only anyway).
    command = [sys.executable, "-I", "-S", "-B", "-c", _IMPORT.format(task=str(task), runtime=str(runtime))]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=task, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    return float(result.stdout.strip().splitlines()[-1]), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--zip", type=Path, help="an API zip already built (with its sam.json beside it)")
    args = parser.parse_args(argv)
    require_lambda_python()
    with tempfile.TemporaryDirectory(prefix="vidline-cold-start-") as tmp_name:
        tmp = Path(tmp_name)
        if args.zip is None:
            # A copy of the app with a placeholder policy file: the policy
            # changes the template, not the code being imported.
            api = copy_apps(tmp / "apps")["api"]
            write_policy(api, args.stage, {"Version": "2012-10-17", "Statement": []})
            built = package_app(api, args.stage, tmp / "package")
            zip_path, template = built.zip_path, built.template_path
        else:
            zip_path, template = args.zip, args.zip.parent / "sam.json"
        env = lambda_env(template)
        runtime = runtime_dir(tmp / "runtime")
        tasks = {
            "with .pyc": unpack(zip_path, tmp / "with", with_bytecode=True),
            "without .pyc": unpack(zip_path, tmp / "without", with_bytecode=False),
        }
        try:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tasks}
            for _ in range(args.runs):  # alternate, so drift hits both alike
                for name, task in tasks.items():
                    samples[name].append(time_import(task, runtime, env))
        finally:
            for task in tasks.values():
                make_writable(task)
    medians = {
        name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for name, runs in samples.items()
    }
    print(f"API zip: {zip_path.name}, {args.runs} fresh processes each, medians:")
    for name, (imported, wall) in medians.items():
        print(f"  {name:13} import app {imported * 1000:7.0f} ms   process {wall * 1000:7.0f} ms")
    (fast, fast_wall), (slow, slow_wall) = medians["with .pyc"], medians["without .pyc"]
    print(f"  ratio without/with: import {slow / fast:.1f}x, process {slow_wall / fast_wall:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
