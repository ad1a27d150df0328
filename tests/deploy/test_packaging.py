"""Both Lambda packages as the deploy ships them: sizes, contents, bytecode, templates.

Builds the API and worker zips once with ``chalice package`` (the worker with
its merge template) plus the ffmpeg layer, then checks them against Lambda's
limits, unpacks them read-only and imports them the way the runtime does.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.cold_start import lambda_env, make_writable, runtime_dir, unpack
from deploy.chalice_config import write_policy
from deploy.packaging import (
    CHALICE_REUSE_MARKER,
    LAMBDA_DIRECT_ZIP_LIMIT,
    LAMBDA_UNZIPPED_LIMIT,
    LAYER_FFMPEG_PATH,
    MERGE_TEMPLATES,
    PackagedApp,
    build_ffmpeg_layer,
    chalice_deploy_env,
    check_reused,
    copy_apps,
    package_app,
    prepare_chalice_deploy,
    unzipped_size,
)
from deploy.policies import api_policy, workers_policy
from tests.deploy.examples import TARGETS

STAGE = "dev"


@dataclass(frozen=True)
class Build:
    api: PackagedApp
    workers: PackagedApp
    layer: Path
    runtime: Path  # a stand-in for Lambda's /var/runtime (boto3, s3transfer)


API_POLICY = api_policy(TARGETS, "vidline-api-dev")
WORKERS_POLICY = workers_policy(TARGETS, ["vidline-workers-dev-process_upload"])


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both apps with the policy files a deploy of STAGE writes (autogen_policy is off)."""
    apps = copy_apps(tmp_path_factory.mktemp("apps"))
    write_policy(apps["api"], STAGE, API_POLICY)
    write_policy(apps["workers"], STAGE, WORKERS_POLICY)
    return apps


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, Path]) -> Build:
    out = tmp_path_factory.mktemp("build")
    return Build(
        api=package_app(apps["api"], STAGE, out / "api", MERGE_TEMPLATES["api"]),
        workers=package_app(apps["workers"], STAGE, out / "workers", MERGE_TEMPLATES["workers"]),
        layer=build_ffmpeg_layer(out / "layer"),
        runtime=runtime_dir(out / "runtime"),
    )


@pytest.fixture
def unpacked(tmp_path: Path) -> Iterator[list[Path]]:
    """Read-only folders to unpack zips into, made writable again afterwards."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        make_writable(folder)


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def ffmpeg_entries(zip_path: Path) -> list[str]:
    return [name for name in names(zip_path) if "ffmpeg" in name.lower() and "chalicelib/" not in name]


def template(app: PackagedApp) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(app.template_path.read_text())
    return loaded


def run_in_task(task: Path, runtime: Path, env: dict[str, str], code: str, *flags: str) -> str:
    """Run ``code`` as the Lambda runtime would: stdlib, then the task, then boto3; no bytecode writes."""
    prelude = f"import sys; sys.path[:0] = [{str(task)!r}, {str(runtime)!r}]; "
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", *flags, "-c", prelude + code],
        cwd=task,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_api_zip_is_small_and_carries_no_ffmpeg(build: Build) -> None:
    assert build.api.zip_bytes < LAMBDA_DIRECT_ZIP_LIMIT
    assert build.api.unzipped_bytes < LAMBDA_UNZIPPED_LIMIT
    assert ffmpeg_entries(build.api.zip_path) == []


def test_worker_zip_leaves_ffmpeg_to_the_layer_and_both_fit_lambda(build: Build) -> None:
    assert build.workers.zip_bytes < LAMBDA_DIRECT_ZIP_LIMIT
    assert ffmpeg_entries(build.workers.zip_path) == []
    assert build.workers.unzipped_bytes + unzipped_size(build.layer) < LAMBDA_UNZIPPED_LIMIT


def test_layer_holds_an_executable_ffmpeg_the_worker_code_finds(build: Build, unpacked: list[Path]) -> None:
    with zipfile.ZipFile(build.layer) as zf:
        (entry,) = zf.infolist()
    assert entry.filename == "bin/ffmpeg"
    assert entry.external_attr >> 16 == 0o100755
    assert entry.date_time == (1980, 1, 1, 0, 0, 0)

    opt = unpack(build.layer, build.layer.parent / "opt", with_bytecode=True)
    task = unpack(build.workers.zip_path, build.layer.parent / "task", with_bytecode=True)
    unpacked += [opt, task]
    ffmpeg = opt / "bin" / "ffmpeg"
    env = {**lambda_env(build.workers.template_path, "ProcessUpload"), "VIDLINE_FFMPEG_PATH": str(ffmpeg)}
    # The worker's zip has no imageio_ffmpeg: the setting alone must find the binary.
    output = run_in_task(
        task,
        build.runtime,
        env,
        "import importlib.util, subprocess; from chalicelib import media; "
        "assert importlib.util.find_spec('imageio_ffmpeg') is None; "
        "print(subprocess.run([media.ffmpeg_exe(), '-version'], capture_output=True, text=True).stdout)",
    )
    assert output.startswith("ffmpeg version")


@pytest.mark.parametrize("app_name", ["api", "workers"])
def test_every_module_ships_unchecked_hash_bytecode(build: Build, app_name: str) -> None:
    app: PackagedApp = getattr(build, app_name)
    with zipfile.ZipFile(app.zip_path) as zf:
        entries = set(zf.namelist())
        for source in ("app.py", "chalicelib/settings.py", "chalicelib/adapters/s3.py", "pydantic/main.py"):
            folder, _, filename = source.rpartition("/")
            pyc = f"{folder}/__pycache__/" if folder else "__pycache__/"
            pyc += filename.removesuffix(".py") + ".cpython-312.pyc"
            assert pyc in entries, pyc
            header = zf.read(pyc)[:16]
            assert header[:4] == importlib.util.MAGIC_NUMBER
            assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, source not checked
            assert header[8:16] == importlib.util.source_hash(zf.read(source))
        assert len([e for e in entries if e.endswith(".pyc")]) >= 0.95 * len(
            [e for e in entries if e.endswith(".py")]
        )


def test_the_runtime_imports_the_api_from_bytecode_and_writes_nothing(
    build: Build, unpacked: list[Path]
) -> None:
    task = unpack(build.api.zip_path, build.api.zip_path.parent / "task", with_bytecode=True)
    unpacked.append(task)
    before = sorted(str(p) for p in task.rglob("*"))

    # -v logs "code object from <path>" for each module: a .pyc when loaded, the .py when compiled.
    log = run_in_task(task, build.runtime, lambda_env(build.api.template_path), "import app", "-v")

    lines = log.splitlines()
    loaded = [line for line in lines if line.startswith("# code object from") and str(task) in line]
    compiled = [line for line in loaded if line.rstrip("'").endswith(".py")]
    assert len(loaded) > 100
    assert compiled == []
    assert sorted(str(p) for p in task.rglob("*")) == before


def test_generated_templates_pass_cfn_lint(build: Build) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), str(build.api.template_path), str(build.workers.template_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_template_sets_what_chalice_deploy_cannot(build: Build) -> None:
    worker = template(build.workers)
    function = worker["Resources"]["ProcessUpload"]["Properties"]
    event = function["Events"]["ProcessUploadSqsEventSource"]

    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["Queue"] == {"Fn::Sub": "${JobsQueueArn}"}
    assert event["Properties"]["BatchSize"] == 1
    assert function["EphemeralStorage"] == {"Size": 10240}
    assert function["Layers"] == [{"Ref": "FfmpegLayerArn"}]
    assert function["Environment"]["Variables"]["VIDLINE_FFMPEG_PATH"] == LAYER_FFMPEG_PATH
    assert set(worker["Parameters"]) == {"JobsQueueArn", "FfmpegLayerArn"}


def test_chalice_reuses_the_zip_prepared_for_deploy(
    build: Build, apps: dict[str, Path], tmp_path: Path
) -> None:
    prepared = prepare_chalice_deploy(apps["api"], STAGE)
    assert any(name.endswith(".cpython-312.pyc") for name in names(prepared))

    # `chalice package` goes through the same packaging step as `chalice deploy`.
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "chalice"),
            "--project-dir",
            str(apps["api"]),
            "package",
            "--stage",
            STAGE,
            str(tmp_path / "out"),
        ],
        env={**chalice_deploy_env(), "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert CHALICE_REUSE_MARKER in result.stdout, result.stdout
    check_reused(result.stdout)
    with pytest.raises(RuntimeError, match="no precompiled bytecode"):
        check_reused("Creating deployment package.\n")
    assert (tmp_path / "out" / "deployment.zip").read_bytes() == prepared.read_bytes()


def test_each_lambda_gets_the_generated_policy_not_an_autogenerated_one(
    build: Build, apps: dict[str, Path]
) -> None:
    for app, policy in ((build.api, API_POLICY), (build.workers, WORKERS_POLICY)):
        roles = [r for r in template(app)["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
        (role,) = roles
        (document,) = [p["PolicyDocument"] for p in role["Properties"]["Policies"]]
        assert document == policy


def test_packaging_without_the_deploys_policy_file_says_what_to_run(tmp_path: Path) -> None:
    unpoliced = copy_apps(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"make deploy STAGE=dev"):
        package_app(unpoliced["api"], STAGE, tmp_path / "out")
