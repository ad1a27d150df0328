"""Lambda packaging: both Chalice zips with precompiled bytecode, and the ffmpeg layer.

API (all paths absolute or relative to the caller's working directory)
----------------------------------------------------------------------
``package_app(project_dir, stage, out_dir, merge_template=None) -> PackagedApp``
    Runs ``chalice package --stage STAGE [--merge-template FILE] OUT_DIR`` and
    adds bytecode to ``OUT_DIR/deployment.zip``; ``merge_template`` is a dict
    from ``deploy.merge.merge_template``, kept as ``OUT_DIR/merge.json``. ``PackagedApp`` holds the zip,
    the SAM template (``sam.json``) and the zip's packed/unpacked sizes. This is
    the CI/CD path: ``aws cloudformation package`` + ``deploy`` the template.
``prepare_chalice_deploy(project_dir, stage="dev") -> Path``
    For the one-command path: builds the zip ``chalice deploy`` will look for
    in ``PROJECT/.chalice/deployments/`` and adds bytecode to it, so the
    following ``chalice deploy`` prints "Reusing existing deployment package."
    and uploads our zip. Run that ``chalice deploy`` with
    :func:`chalice_deploy_env` (``PYTHONDONTWRITEBYTECODE=1``), or its import of
    ``app.py`` can rewrite ``chalicelib/__pycache__``, which changes the cache
    key and makes Chalice build a fresh zip without bytecode.
    :func:`check_reused` raises if Chalice's output shows it did not reuse it.
``build_ffmpeg_layer(out_dir) -> Path``
    Writes ``OUT_DIR/ffmpeg-layer.zip`` holding ``bin/ffmpeg`` (Lambda mounts
    layers at ``/opt``, so the binary is ``/opt/bin/ffmpeg``). The zip is over
    50 MB, so it is published from S3 (``AWS::Lambda::LayerVersion`` with
    ``Content.S3Bucket``/``S3Key``, or ``PublishLayerVersion`` with S3 content).
    The binary is always imageio-ffmpeg's Linux x86_64 build, checked to be
    an x86-64 ELF, also when the machine packaging is a Mac or arm64 (then
    ``pip download`` fetches the pinned manylinux wheel for it).
``add_bytecode(zip_path) -> None``
    Rewrites a deployment zip in place with ``__pycache__/*.cpython-312.pyc``
    next to every ``.py``, compiled with ``PycInvalidationMode.UNCHECKED_HASH``.

The worker needs the layer and ``VIDLINE_FFMPEG_PATH=/opt/bin/ffmpeg``
(:data:`LAYER_FFMPEG_PATH`) in its environment; without that variable it
falls back to ``imageio_ffmpeg``, which its deployed zip does not contain.

Decisions
---------
ffmpeg: a layer, not the package. imageio-ffmpeg's binary alone is 165 MiB
unpacked (65 MiB zipped), far over Chalice's 50 MB zip limit; a layer counts
only against Lambda's 250 MiB unzipped total (function + layers): the worker's
57 MiB plus the layer's 165 MiB leave about 28 MiB to spare. The worker's zip
stays small (29 MiB) and the layer changes only when ffmpeg does.
imageio-ffmpeg is therefore a development requirement (requirements-dev.txt),
not a worker one.

Bytecode: Chalice zips hold no usable ``.pyc`` and ``/var/task`` is read-only,
so without them every cold start compiles every module it imports (the API's
``import app``: about 1.1-1.4 s without, 0.35-0.45 s with; bench/cold_start.py).
Chalice has no hook for this, so we post-process its zip. ``unchecked-hash``
pycs are used without looking at the source at all; timestamp pycs would have
to match the mtimes the unpacked files get, which we do not control. Any ``.pyc`` already in the zip
(e.g. a local ``chalicelib/__pycache__`` that Chalice copied) is replaced. Both
paths share one cache: ``chalice package`` and ``chalice deploy`` both build
``.chalice/deployments/<hash of requirements and app files>-python3.12.zip``
and reuse it when it exists, so compiling into that file is enough for
``chalice deploy``; no second upload, no Lambda API call of our own. The
bytecode must match the runtime's CPython minor version (3.12), so building
under any other Python is refused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import marshal
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The Lambda runtime our zips and pycs are built for.
LAMBDA_PYTHON = (3, 12)
LAMBDA_RUNTIME = "python3.12"

# Lambda's limits: a zip uploaded directly, and everything unpacked incl. layers.
LAMBDA_DIRECT_ZIP_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

LAYER_FFMPEG_PATH = "/opt/bin/ffmpeg"
FFMPEG_PATH_ENV = "VIDLINE_FFMPEG_PATH"
LAYER_ZIP_NAME = "ffmpeg-layer.zip"

# What `chalice deploy` prints when it uses the zip we prepared.
CHALICE_REUSE_MARKER = "Reusing existing deployment package."

# The apps and their project directories. Each app's merge template (CI/CD
# path) is made per stage by deploy.merge.merge_template(name, dir, stage).
APPS = {"api": ROOT, "workers": ROOT / "workers"}

# Lambda runs our functions on x86_64 Linux, so the layer's ffmpeg is
# imageio-ffmpeg's Linux x86_64 build whatever machine builds the layer:
# the wheel for this platform tag, at the version requirements-dev.txt pins.
FFMPEG_WHEEL_PLATFORM = "manylinux_2_28_x86_64"
FFMPEG_WHEEL_BINARY_PREFIX = "imageio_ffmpeg/binaries/ffmpeg-linux-x86_64"
REQUIREMENTS_DEV = ROOT / "requirements-dev.txt"
# The binary is GPL v3-or-later (configured --enable-gpl --enable-version3,
# with libx264 and libx265): the layer carries the license and a notice, so
# a layer that is shared on keeps them (README "Licenses").
GPL_TEXT = Path(__file__).resolve().parent / "licenses" / "GPL-3.0.txt"
LAYER_LICENSE_DIR = "share/licenses/ffmpeg"
LAYER_NOTICE = """\
ffmpeg in this layer (bin/ffmpeg)

bin/ffmpeg is the Linux x86-64 ffmpeg binary of the imageio-ffmpeg {version}
wheel (https://github.com/imageio/imageio-ffmpeg), copied unchanged by
Vidline's deploy (deploy/packaging.py build_ffmpeg_layer).

It is free software under the GNU General Public License, version 3 or
later: COPYING.GPLv3, next to this file. It was configured with --enable-gpl
--enable-version3 and links GPL libraries such as libx264 and libx265.
`bin/ffmpeg -L` prints its license; `bin/ffmpeg -version` its exact FFmpeg
version and configure line.

Running it in your own functions is not distribution. If you give this layer
or the binary to others (share the layer version with other AWS accounts,
publish the zip), the GPL applies to that copy: pass this notice and the
license on with it, and make the Corresponding Source available to the
recipients (FFmpeg at the version `-version` prints, with the libraries and
build scripts it was built from), or a written offer of it, as GPL v3
section 6 describes.

Vidline's own code is under the MIT License (LICENSE in its repository);
that does not change the license of this binary.
"""
# ELF header: magic, EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian); e_machine at offset 18.
_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_EM_X86_64 = 0x3E

# Zip entries get this timestamp when nothing better is known, so builds are reproducible.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_PYC_SUFFIX = f".{sys.implementation.cache_tag}.pyc"


@dataclass(frozen=True)
class PackagedApp:
    """One app packaged by ``chalice package``, with bytecode added."""

    zip_path: Path
    template_path: Path
    zip_bytes: int
    unzipped_bytes: int


def require_lambda_python() -> None:
    """Refuse to build under a Python whose bytecode the Lambda runtime cannot load."""
    if sys.version_info[:2] != LAMBDA_PYTHON or sys.implementation.name != "cpython":
        wanted = ".".join(map(str, LAMBDA_PYTHON))
        raise RuntimeError(
            f"packaging needs CPython {wanted} (the {LAMBDA_RUNTIME} runtime loads only its own "
            f".pyc and Chalice picks the runtime from the Python that runs it); this is "
            f"{sys.implementation.name} {sys.version.split()[0]}"
        )


def package_app(
    project_dir: Path, stage: str, out_dir: Path, merge_template: Mapping[str, Any] | None = None
) -> PackagedApp:
    """Run ``chalice package`` for one app into ``out_dir`` and add bytecode to its zip.

    ``out_dir`` is replaced. The template is SAM JSON (``sam.json``) whose
    ``CodeUri`` is ``./deployment.zip``, ready for ``aws cloudformation package``.
    ``merge_template`` (deploy.merge) is merged into it and kept as ``merge.json``.
    """
    require_lambda_python()
    _require_policy_file(Path(project_dir), stage)
    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    command = [_chalice(), "--project-dir", str(Path(project_dir).resolve()), "package", "--stage", stage]
    with tempfile.TemporaryDirectory(prefix="vidline-merge-") as scratch:
        merge_path = Path(scratch) / "merge.json"
        if merge_template is not None:
            merge_path.write_text(json.dumps(merge_template, indent=2) + "\n", encoding="utf-8")
            command += ["--merge-template", str(merge_path)]
        subprocess.run([*command, str(out_dir)], check=True, env=_chalice_env(), stdout=subprocess.DEVNULL)
        if merge_template is not None:
            shutil.copyfile(merge_path, out_dir / "merge.json")
    zip_path = out_dir / "deployment.zip"
    add_bytecode(zip_path)
    return PackagedApp(
        zip_path=zip_path,
        template_path=out_dir / "sam.json",
        zip_bytes=zip_path.stat().st_size,
        unzipped_bytes=unzipped_size(zip_path),
    )


def copy_apps(dest: Path) -> dict[str, Path]:
    """Copy both apps' code and Chalice configs under ``dest``, laid out as here; their dirs.

    For packaging somewhere other than the checkout (tests, benchmarks), with
    policy files of the caller's own. Caches, deploy records and the
    generated policy files are left behind.
    """
    ignore = shutil.ignore_patterns("__pycache__", "deployments", "deployed", "policy-*.json", "vendor")
    api = Path(dest) / "app"
    shutil.copytree(ROOT / "chalicelib", api / "chalicelib", ignore=ignore)
    shutil.copytree(ROOT / ".chalice", api / ".chalice", ignore=ignore)
    # workers/chalicelib stays a symbolic link to ../chalicelib.
    shutil.copytree(ROOT / "workers", api / "workers", symlinks=True, ignore=ignore)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(ROOT / name, api / name)
    return {"api": api, "workers": api / "workers"}


def _require_policy_file(project_dir: Path, stage: str) -> None:
    # With autogen_policy off Chalice needs the policy file the deploy writes
    # from the stack's outputs; say so rather than let Chalice fail obscurely.
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    entry = config.get("stages", {}).get(stage, {})
    if entry.get("autogen_policy", config.get("autogen_policy", True)):
        return
    name = entry.get("iam_policy_file", config.get("iam_policy_file", "policy.json"))
    if not (project_dir / ".chalice" / name).is_file():
        raise FileNotFoundError(
            f"{project_dir / '.chalice' / name} is missing: `make deploy STAGE={stage}` writes it from "
            "the infrastructure stack's outputs (autogen_policy is off)"
        )


def prepare_chalice_deploy(project_dir: Path, stage: str = "dev") -> Path:
    """Build the zip ``chalice deploy`` will reuse for ``project_dir``, with bytecode.

    Uses Chalice's own packager, so the file name (a hash of the requirements
    and app files) is the one ``chalice deploy`` computes. Returns its path.
    """
    from chalice.config import Config
    from chalice.deploy import packager as chalice_packager
    from chalice.utils import UI, OSUtils

    require_lambda_python()
    project = str(Path(project_dir).resolve())
    config_from_disk = json.loads((Path(project) / ".chalice" / "config.json").read_text())
    config = Config(chalice_stage=stage, config_from_disk=config_from_disk)
    if config.automatic_layer:
        raise RuntimeError("automatic_layer splits the app into a layer; prepare_chalice_deploy does not")
    osutils = OSUtils()
    pip = chalice_packager.SubprocessPip(osutils=osutils)
    packager = chalice_packager.LambdaDeploymentPackager(
        osutils=osutils,
        dependency_builder=chalice_packager.DependencyBuilder(
            osutils=osutils,
            pip_runner=chalice_packager.PipRunner(pip=pip, osutils=osutils),
            architecture=config.lambda_architecture,
        ),
        ui=UI(),
        architecture=config.lambda_architecture,
    )
    zip_path = Path(packager.create_deployment_package(project, config.lambda_python_version))
    add_bytecode(zip_path)
    return zip_path


def chalice_deploy_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``chalice deploy`` after :func:`prepare_chalice_deploy`.

    ``chalice deploy`` imports ``app.py``; writing ``__pycache__`` into
    ``chalicelib/`` then would change the cache key and defeat the prepared zip.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_reused(chalice_output: str) -> None:
    """Raise if ``chalice deploy``'s output shows it built its own zip (no bytecode)."""
    if "Creating deployment package." in chalice_output and CHALICE_REUSE_MARKER not in chalice_output:
        raise RuntimeError(
            "chalice deploy built a new deployment package instead of reusing the prepared one "
            "(the app changed in between?): it has no precompiled bytecode"
        )


def add_bytecode(zip_path: Path) -> None:
    """Rewrite ``zip_path`` in place with unchecked-hash CPython 3.12 pycs for every module.

    Each ``pkg/mod.py`` gains ``pkg/__pycache__/mod.cpython-312.pyc`` (PEP 552
    flags 0b01: hash-based, source not checked), where the runtime's import
    system looks for it. Existing ``.pyc`` entries are dropped first, so the
    result does not depend on a developer's ``__pycache__`` and running this
    twice changes nothing. Files that do not compile (templates, Python 2
    leftovers in some wheels) are left without a pyc, as ``compileall`` would.
    """
    require_lambda_python()
    zip_path = Path(zip_path)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename.endswith(".pyc") or info.filename.endswith("/__pycache__/"):
                continue
            data = source.read(info)
            target.writestr(info, data)
            if info.filename.endswith(".py"):
                pyc = _hash_pyc(data, info.filename)
                if pyc is not None:
                    target.writestr(_pyc_info(info), pyc, zipfile.ZIP_DEFLATED)
    tmp.replace(zip_path)


def build_ffmpeg_layer(out_dir: Path) -> Path:
    """Write ``out_dir/ffmpeg-layer.zip`` holding ``bin/ffmpeg``, deterministically.

    The binary is imageio-ffmpeg's Linux x86_64 build (:func:`linux_ffmpeg`),
    checked to be an x86-64 ELF, stored with a fixed timestamp and mode
    0755, so the same ffmpeg always gives the same zip and Lambda unpacks it
    executable. Its license (GPL v3) and a notice go under
    ``share/licenses/ffmpeg/``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer = out_dir / LAYER_ZIP_NAME
    tmp = layer.with_name(layer.name + ".tmp")
    info = zipfile.ZipInfo("bin/ffmpeg", date_time=_EPOCH)
    info.create_system = 3  # Unix, so the mode bits below are honoured
    info.external_attr = 0o100755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with tempfile.TemporaryDirectory(prefix="vidline-ffmpeg-") as scratch:
        binary_path = linux_ffmpeg(Path(scratch))
        require_linux_x86_64_elf(binary_path)
        with (
            open(binary_path, "rb") as binary,
            zipfile.ZipFile(tmp, "w") as zf,
            zf.open(info, "w") as entry,
        ):
            shutil.copyfileobj(binary, entry, 1024 * 1024)
        with zipfile.ZipFile(tmp, "a") as zf:
            notice = LAYER_NOTICE.format(version=pinned_version("imageio-ffmpeg"))
            for name, text in (("README.txt", notice), ("COPYING.GPLv3", GPL_TEXT.read_text("utf-8"))):
                document = zipfile.ZipInfo(f"{LAYER_LICENSE_DIR}/{name}", date_time=_EPOCH)
                document.create_system = 3
                document.external_attr = 0o100644 << 16
                document.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(document, text)
    tmp.replace(layer)
    return layer


def is_linux_x86_64_elf(path: Path) -> bool:
    """Whether `path` starts with the ELF header of a 64-bit little-endian x86-64 file."""
    with open(path, "rb") as binary:
        header = binary.read(20)
    return (
        len(header) == 20
        and header[:4] == _ELF_MAGIC
        and header[4] == _ELFCLASS64
        and header[5] == _ELFDATA2LSB
        and int.from_bytes(header[18:20], "little") == _EM_X86_64
    )


def require_linux_x86_64_elf(path: Path) -> None:
    """Raise unless `path` is an x86-64 ELF, the only ffmpeg Lambda's x86_64 runtime can run."""
    if not is_linux_x86_64_elf(path):
        raise RuntimeError(f"{path} is not a Linux x86-64 (ELF, EM_X86_64) binary: Lambda could not run it")


def linux_ffmpeg(scratch: Path) -> Path:
    """imageio-ffmpeg's Linux x86_64 ffmpeg: the installed one if it is that build, else from its wheel.

    On a Linux x86_64 machine the installed wheel already holds it (the file
    the wheel ships, whatever ``IMAGEIO_FFMPEG_EXE`` says). Elsewhere
    (macOS, arm64) ``pip download`` fetches the pinned version's
    manylinux x86_64 wheel into `scratch` and the binary is taken out of it.
    """
    for local in installed_ffmpeg_binaries():
        if is_linux_x86_64_elf(local):
            return local
    version = pinned_version("imageio-ffmpeg")
    wheels = scratch / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"imageio-ffmpeg=={version}",
            "--platform",
            FFMPEG_WHEEL_PLATFORM,
            "--only-binary=:all:",
            "--no-deps",
            "--quiet",
            "-d",
            str(wheels),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("imageio_ffmpeg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.startswith(FFMPEG_WHEEL_BINARY_PREFIX)]
        target = scratch / "ffmpeg"
        with zf.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
    return target


def installed_ffmpeg_binaries() -> list[Path]:
    """The ffmpeg binaries the installed imageio-ffmpeg wheel ships (none if it is not installed).

    The wheel's own files, not ``get_ffmpeg_exe()``: ``IMAGEIO_FFMPEG_EXE``
    may point that at a system ffmpeg built for other libraries.
    """
    spec = importlib.util.find_spec("imageio_ffmpeg")
    if spec is None or not spec.origin:
        return []
    return sorted((Path(spec.origin).parent / "binaries").glob("ffmpeg-*"))


def pinned_version(package: str, requirements: Path = REQUIREMENTS_DEV) -> str:
    """The version `requirements` pins `package` to (``package==X``)."""
    pattern = re.compile(rf"^\s*{re.escape(package)}\s*==\s*([^\s;#]+)", re.IGNORECASE | re.MULTILINE)
    match = pattern.search(requirements.read_text(encoding="utf-8"))
    if match is None:
        raise RuntimeError(f"{requirements} does not pin {package}==<version>")
    return match.group(1)


def unzipped_size(zip_path: Path) -> int:
    """Bytes the zip takes once unpacked (what Lambda counts against 250 MB)."""
    with zipfile.ZipFile(zip_path) as zf:
        return sum(info.file_size for info in zf.infolist())


def _hash_pyc(source: bytes, filename: str) -> bytes | None:
    try:
        code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return None
    # PEP 552: magic, flags (0b01: hash-based, source not checked), source hash, code.
    flags = (0b01).to_bytes(4, "little")
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source) + marshal.dumps(code)


def _pyc_info(source: zipfile.ZipInfo) -> zipfile.ZipInfo:
    path = PurePosixPath(source.filename)
    info = zipfile.ZipInfo(str(path.parent / "__pycache__" / (path.stem + _PYC_SUFFIX)), source.date_time)
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _chalice() -> str:
    """The chalice CLI next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "chalice"
    return str(beside) if beside.exists() else "chalice"


def _chalice_env() -> dict[str, str]:
    # Chalice needs a region to build its clients even when it only packages.
    env = chalice_deploy_env()
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.packaging``: both apps (with merge templates) and the layer into one folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args(argv)
    mb = 1024 * 1024
    layer = build_ffmpeg_layer(args.out)
    print(
        f"layer    {layer}: {layer.stat().st_size / mb:.1f} MiB zipped, "
        f"{unzipped_size(layer) / mb:.1f} MiB unzipped"
    )
    from deploy.merge import merge_template
    from deploy.stages import load_stage

    stage = load_stage(args.stage)
    for name, project_dir in APPS.items():
        template = merge_template(name, project_dir, stage)
        app = package_app(project_dir, args.stage, args.out / name, template)
        print(
            f"{name:8} {app.zip_path}: {app.zip_bytes / mb:.1f} MiB zipped, "
            f"{app.unzipped_bytes / mb:.1f} MiB unzipped; template {app.template_path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
