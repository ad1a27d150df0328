"""Fixtures that build real things: a moto server, the apps, generated clips."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.settings import Settings, get_settings
from devstack.aws import LOCAL_CREDENTIALS
from devstack.client import ROOT, free_port
from devstack.pump import load_chalice_app
from devstack.resources import ensure_resources
from tests.media_tools import make_clip


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def settings(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a local stage on the session's moto server, with every
    resource created; the environment is set so the apps read the same."""
    env = {
        **LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "VIDLINE_STAGE": "test",
        "VIDLINE_AUTH_MODE": "app",
        "VIDLINE_AUTO_CONFIRM_SIGNUPS": "true",
        "VIDLINE_APP_URL": "http://127.0.0.1:8080",
        "VIDLINE_WORK_DIR": str(tmp_path_factory.mktemp("work")),
        "VIDLINE_MAIL_SENDER": "Vidline <no-reply@vidline.test>",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    ids = ensure_resources(Settings(), moto_endpoint)
    for key, value in ids.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    patch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def api_module(settings: Settings) -> ModuleType:
    load_chalice_app(ROOT / "app.py", "vidline_api_app")
    return sys.modules["vidline_api_app"]


@pytest.fixture(scope="session")
def workers_module(settings: Settings) -> ModuleType:
    load_chalice_app(ROOT / "workers" / "app.py", "vidline_workers_app")
    return sys.modules["vidline_workers_app"]


@pytest.fixture(scope="session")
def aws(settings: Settings, moto_endpoint: str) -> Any:
    """boto3 clients on the session's moto server."""

    class Clients:
        def __getattr__(self, service: str) -> Any:
            return boto3.client(
                service.replace("_", "-"),
                endpoint_url=moto_endpoint,
                region_name=settings.region,
            )

    return Clients()


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2)


@pytest.fixture(scope="session", autouse=True)
def _quiet_moto_access_log() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
