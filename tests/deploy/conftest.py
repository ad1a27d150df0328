"""Fixtures for the deploy tests: the templates as data, a copy of the apps' configs."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from deploy.executor import Project
from deploy.template import INFRA_DIR, load_template
from devstack.aws import LOCAL_CREDENTIALS
from devstack.client import ROOT


@pytest.fixture(scope="session")
def stack_template() -> dict[str, Any]:
    return load_template(INFRA_DIR / "stack.yaml")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A copy of both apps' Chalice configs, so a deploy can write its stage settings there."""
    for config in (Path(".chalice/config.json"), Path("workers/.chalice/config.json")):
        (tmp_path / config).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / config, tmp_path / config)
    return Project(tmp_path)


@pytest.fixture
def layer_zip(tmp_path: Path) -> Path:
    """A small stand-in for the ffmpeg layer's zip (the real one is ~70 MB)."""
    path = tmp_path / "ffmpeg-layer.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bin/ffmpeg", "#!/bin/sh\necho ffmpeg\n")
    return path


@pytest.fixture
def moto_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Dummy credentials in the environment (as a deploy against moto needs); the endpoint."""
    for key, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint
