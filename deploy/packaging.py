"""Lambda packaging: both Chalice zips with precompiled bytecode, and the ffmpeg layer.

API (all paths absolute or relative to the caller's working directory)
----------------------------------------------------------------------
``package_app(project_dir, stage, out_dir, merge_template=None) -> PackagedApp``
    Runs ``chalice package --stage STAGE [--merge-template FILE] OUT_DIR`` and
    adds bytecode to ``OUT_DIR/deployment.zip``. ``PackagedApp`` holds the zip,
    the SAM template (``sam.json``) and the zip's packed/unpacked sizes. This is
    the CI/CD path: ``aws cloudformation package`` + ``deploy`` the template.
``prepare_chalice_deploy(project_dir) -> Path``
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
``add_bytecode(zip_path) -> None``
    Rewrites a deployment zip in place with ``__pycache__/*.cpython-312.pyc``
    next to every ``.py``, compiled with ``PycInvalidationMode.UNCHECKED_HASH``.

The worker needs the layer and ``VIDLINE_FFMPEG_PATH=/opt/bin/ffmpeg``
(:data:`LAYER_FFMPEG_PATH`) in its environment; without that variable it
falls back to ``imageio_ffmpeg``, which its deployed zip does not contain.

Decisions
---------
ffmpeg: a layer, not the package. imageio-ffmpeg's binary alone is 173 MB
unpacked, far over Chalice's 50 MB zip limit; a layer counts only against
Lambda's 250 MB unzipped total (function + layers), so the worker's zip stays
small and the layer changes only when ffmpeg does. imageio-ffmpeg is therefore
a development requirement (requirements-dev.txt), not a worker one.

Bytecode: Chalice zips hold no usable ``.pyc`` and ``/var/task`` is read-only,
so without them every cold start compiles every module it imports. Chalice has
no hook for this, so we post-process its zip. ``unchecked-hash`` pycs are used
without looking at the source's mtime (zip extraction does not keep mtimes
exactly, so timestamp pycs would be ignored). Any ``.pyc`` already in the zip
(e.g. a local ``chalicelib/__pycache__`` that Chalice copied) is replaced. Both
paths share one cache: ``chalice package`` and ``chalice deploy`` both build
``.chalice/deployments/<hash of requirements and app files>-python3.12.zip``
and reuse it when it exists, so compiling into that file is enough for
``chalice deploy``; no second upload, no Lambda API call of our own. The
bytecode must match the runtime's CPython minor version (3.12), so building
under any other Python is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The Lambda runtime our zips and pycs are built for.
LAMBDA_PYTHON = (3, 12)
LAMBDA_RUNTIME = "python3.12"

# Lambda's limits: a zip uploaded directly, and everything unpacked incl. layers.
LAMBDA_DIRECT_ZIP_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

LAYER_FFMPEG_PATH = "/opt/bin/ffmpeg"
FFMPEG_PATH_ENV = "VIDLINE_FFMPEG_PATH"

# What `chalice deploy` prints when it uses the zip we prepared.
CHALICE_REUSE_MARKER = "Reusing existing deployment package."


@dataclass(frozen=True)
class PackagedApp:
    """One app packaged by ``chalice package``, with bytecode added."""

    zip_path: Path
    template_path: Path
    zip_bytes: int
    unzipped_bytes: int


def package_app(
    project_dir: Path, stage: str, out_dir: Path, merge_template: Path | None = None
) -> PackagedApp:
    """Run ``chalice package`` for one app into ``out_dir`` and add bytecode to its zip."""
    raise NotImplementedError


def prepare_chalice_deploy(project_dir: Path) -> Path:
    """Build the zip ``chalice deploy`` will reuse for ``project_dir``, with bytecode."""
    raise NotImplementedError


def chalice_deploy_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``chalice deploy`` after :func:`prepare_chalice_deploy`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_reused(chalice_output: str) -> None:
    """Raise if ``chalice deploy``'s output shows it built its own zip (no bytecode)."""
    raise NotImplementedError


def add_bytecode(zip_path: Path) -> None:
    """Rewrite ``zip_path`` in place with unchecked-hash CPython 3.12 pycs for every module."""
    raise NotImplementedError


def build_ffmpeg_layer(out_dir: Path) -> Path:
    """Write ``out_dir/ffmpeg-layer.zip`` holding ``bin/ffmpeg``, deterministically."""
    raise NotImplementedError
