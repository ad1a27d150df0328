"""Both Lambda packages as the deploy ships them: sizes, contents, bytecode, templates.

Builds the API and worker zips once with ``chalice package`` (each with its
stage's merge template, deploy/merge.py) plus the ffmpeg layer, then checks them against Lambda's
limits, unpacks them read-only and imports them the way the runtime does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.cold_start import lambda_env, make_writable, runtime_dir, unpack
from deploy.chalice_config import SCHEDULED_HANDLERS, write_policy
from deploy.merge import gateway_responses, merge_template
from deploy.packaging import (
    CHALICE_REUSE_MARKER,
    LAMBDA_DIRECT_ZIP_LIMIT,
    LAMBDA_UNZIPPED_LIMIT,
    LAYER_FFMPEG_PATH,
    PackagedApp,
    build_ffmpeg_layer,
    chalice_deploy_env,
    check_reused,
    copy_apps,
    installed_ffmpeg_binaries,
    is_linux_x86_64_elf,
    linux_ffmpeg,
    package_app,
    pinned_version,
    prepare_chalice_deploy,
    require_linux_x86_64_elf,
    unzipped_size,
)
from deploy.policies import api_policy, workers_policy
from deploy.stages import load_stage
from tests.deploy.examples import TARGETS

STAGE = "dev"


@dataclass(frozen=True)
class Build:
    api: PackagedApp
    workers: PackagedApp
    layer: Path
    runtime: Path  # a stand-in for Lambda's /var/runtime (boto3, s3transfer)


API_POLICY = api_policy(TARGETS, "vidline-api-dev")
WORKERS_POLICY = workers_policy(
    TARGETS,
    [
        "vidline-workers-dev-process_upload",
        "vidline-workers-dev-fail_dead_upload",
        *(f"vidline-workers-dev-{handler}" for handler in SCHEDULED_HANDLERS),
    ],
)


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
    stage = load_stage(STAGE)
    return Build(
        api=package_app(apps["api"], STAGE, out / "api", merge_template("api", apps["api"], stage)),
        workers=package_app(
            apps["workers"], STAGE, out / "workers", merge_template("workers", apps["workers"], stage)
        ),
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


def file_digest(path: Path) -> str:
    with open(path, "rb") as binary:
        return hashlib.file_digest(binary, "sha256").hexdigest()


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
        entry = zf.getinfo("bin/ffmpeg")
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
        "import importlib.util, subprocess; from chalicelib.media import find_ffmpeg; "
        "from chalicelib.settings import get_settings; "
        "assert importlib.util.find_spec('imageio_ffmpeg') is None; "
        "exe = find_ffmpeg(get_settings().ffmpeg_path); "
        "print(subprocess.run([exe, '-version'], capture_output=True, text=True).stdout)",
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
    assert set(worker["Parameters"]) == {"JobsQueueArn", "JobsDeadLetterQueueArn", "FfmpegLayerArn"}
    # The name chalice deploy gives it, which its policy's log grant and the stack's log group use.
    assert function["FunctionName"] == "vidline-workers-dev-process_upload"
    assert function["Timeout"] == 900


def test_the_dead_letter_handler_is_triggered_by_the_dead_letter_queue(build: Build) -> None:
    worker = template(build.workers)
    functions = {n for n, r in worker["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == {"ProcessUpload", "FailDeadUpload", "AbandonedUploads", "StuckJobs", "Rollup"}
    function = worker["Resources"]["FailDeadUpload"]["Properties"]
    event = function["Events"]["FailDeadUploadSqsEventSource"]

    assert event["Type"] == "SQS" and event["Properties"]["BatchSize"] == 1
    assert event["Properties"]["Queue"] == {"Fn::Sub": "${JobsDeadLetterQueueArn}"}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert function["FunctionName"] == "vidline-workers-dev-fail_dead_upload"
    # A small function: one DynamoDB write and one email (workers/.chalice/config.json).
    assert (function["Timeout"], function["MemorySize"]) == (60, 1024)
    assert "EphemeralStorage" not in function


def test_the_scheduled_jobs_are_functions_on_eventbridge_schedules(build: Build) -> None:
    worker = template(build.workers)
    schedules = {}
    for name, handler in (("AbandonedUploads", "abandoned-uploads"), ("StuckJobs", "stuck-jobs")):
        function = worker["Resources"][name]["Properties"]
        assert function["FunctionName"] == f"vidline-workers-dev-{handler}"
        (event,) = function["Events"].values()
        assert event["Type"] == "Schedule"
        schedules[handler] = event["Properties"]["Schedule"]
        assert "EphemeralStorage" not in function
    assert schedules == {"abandoned-uploads": "rate(15 minutes)", "stuck-jobs": "rate(5 minutes)"}


def test_api_template_sets_what_make_deploy_configures_after_chalice_deploy(build: Build) -> None:
    api = template(build.api)
    functions = [name for name, r in api["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert functions == ["APIHandler"]
    assert api["Resources"]["APIHandler"]["Properties"]["FunctionName"] == "vidline-api-dev"
    rest_api = api["Resources"]["RestAPI"]["Properties"]
    assert rest_api["EndpointConfiguration"] == "REGIONAL"
    stage = load_stage(STAGE)
    assert rest_api["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": stage.api_throttle_rate,
            "ThrottlingBurstLimit": stage.api_throttle_burst,
        }
    ]
    # The same gateway responses make deploy puts, for the stage's origin, in the API definition.
    assert rest_api["DefinitionBody"]["x-amazon-apigateway-gateway-responses"] == gateway_responses(
        "https://example.com"
    )
    assert rest_api["DefinitionBody"]["paths"]  # chalice's own definition is still there


def test_every_function_logs_where_its_policy_allows(build: Build) -> None:
    for app, policy in ((build.api, API_POLICY), (build.workers, WORKERS_POLICY)):
        (logs,) = [s for s in policy["Statement"] if s["Sid"] == "OwnLogStreams"]
        for resource in template(app)["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                name = resource["Properties"]["FunctionName"]
                assert TARGETS.log_group_arn(name) + ":log-stream:*" in logs["Resource"], name


def test_elf_check_takes_only_x86_64_linux_binaries(tmp_path: Path) -> None:
    def fake(name: str, header: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(header.ljust(64, b"\0"))
        return path

    def elf(ei_class: int, ei_data: int, machine: int) -> bytes:
        return (
            b"\x7fELF"
            + bytes([ei_class, ei_data, 1])
            + bytes(9)  # the rest of e_ident
            + (2).to_bytes(2, "little")
            + machine.to_bytes(2, "little")
        )

    x86_64 = fake("x86_64", elf(2, 1, 0x3E))
    assert is_linux_x86_64_elf(x86_64)
    require_linux_x86_64_elf(x86_64)
    for wrong in (
        fake("macho-arm64", bytes.fromhex("cffaedfe0c000001")),  # Mach-O 64-bit, arm64
        fake("aarch64", elf(2, 1, 0xB7)),
        fake("i386", elf(1, 1, 0x03)),
        fake("big-endian", elf(2, 2, 0x3E)),
        fake("script", b"#!/bin/sh\necho ffmpeg\n"),
    ):
        assert not is_linux_x86_64_elf(wrong), wrong.name
        with pytest.raises(RuntimeError, match="not a Linux x86-64"):
            require_linux_x86_64_elf(wrong)
    (tmp_path / "short").write_bytes(b"\x7fELF")
    assert not is_linux_x86_64_elf(tmp_path / "short")


def test_the_layer_carries_ffmpegs_gpl_and_a_notice(build: Build) -> None:
    """The binary is GPL v3 or later: a copy of the layer passed on must keep its license."""
    with zipfile.ZipFile(build.layer) as zf:
        assert sorted(zf.namelist()) == [
            "bin/ffmpeg",
            "share/licenses/ffmpeg/COPYING.GPLv3",
            "share/licenses/ffmpeg/README.txt",
        ]
        license_text = zf.read("share/licenses/ffmpeg/COPYING.GPLv3").decode()
        notice = zf.read("share/licenses/ffmpeg/README.txt").decode()
        dates = {info.date_time for info in zf.infolist()}
    assert license_text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE\n                       Version 3")
    assert "imageio-ffmpeg 0.8.1" in notice and "Corresponding Source" in notice
    assert dates == {(1980, 1, 1, 0, 0, 0)}  # the same ffmpeg gives the same zip


def test_the_layers_ffmpeg_is_an_x86_64_linux_binary(build: Build) -> None:
    with zipfile.ZipFile(build.layer) as zf, zf.open("bin/ffmpeg") as binary:
        header = binary.read(64)
    (build.layer.parent / "header").write_bytes(header)
    assert is_linux_x86_64_elf(build.layer.parent / "header")


def test_a_machine_without_the_linux_build_downloads_the_pinned_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a Mac: the installed imageio-ffmpeg ships a Mach-O binary, so the layer's comes from PyPI."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("PyPI is not reachable")
    macho = tmp_path / "ffmpeg-macos-aarch64-v7.1"
    macho.write_bytes(bytes.fromhex("cffaedfe0c000001").ljust(64, b"\0"))
    real_installed_binaries = installed_ffmpeg_binaries
    monkeypatch.setattr("deploy.packaging.installed_ffmpeg_binaries", lambda: [macho])
    assert pinned_version("imageio-ffmpeg") == "0.8.1"

    downloaded = linux_ffmpeg(tmp_path / "scratch")

    assert is_linux_x86_64_elf(downloaded)
    installed = [path for path in real_installed_binaries() if is_linux_x86_64_elf(path)]
    if installed:  # on Linux x86-64: the same build, so the same layer zip either way
        assert file_digest(downloaded) == file_digest(installed[0])


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
        # With autogen_policy off Chalice gives each function a role of its own, all with the app's policy.
        resources = template(app)["Resources"].values()
        roles = [r for r in resources if r["Type"] == "AWS::IAM::Role"]
        functions = [r for r in resources if r["Type"] == "AWS::Serverless::Function"]
        # The API is one function; the workers are two queue handlers and three scheduled jobs.
        assert len(functions) == (1 if app is build.api else 5)
        assert len(roles) == len(functions)
        for role in roles:
            (document,) = [p["PolicyDocument"] for p in role["Properties"]["Policies"]]
            assert document == policy


def test_packaging_without_the_deploys_policy_file_says_what_to_run(tmp_path: Path) -> None:
    unpoliced = copy_apps(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"make deploy STAGE=dev"):
        package_app(unpoliced["api"], STAGE, tmp_path / "out")
