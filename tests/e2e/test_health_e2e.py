"""Health and one video's story on the whole local stack (`python -m devstack`).

The API (`chalice local`) and the worker (the event pump) are separate
processes; both append to the stack's JSON log, and `python -m devstack logs`
tells one video's story from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.client import ROOT, ApiClient, StackProcess
from tests.e2e.conftest import PATIENT_HEALTH
from tests.media_tools import make_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """A stack whose JSON log is this module's own file (VIDLINE_LOG_FILE)."""
    folder = tmp_path_factory.mktemp("stack")
    env = {"VIDLINE_LOG_FILE": str(folder / "logs.jsonl"), **PATIENT_HEALTH}
    with StackProcess(folder / "stack.log", env=env) as running:
        yield running
    assert running.exit_code == 0, running.log_tail()


def test_health_is_ok_deep_and_shallow(stack: StackProcess) -> None:
    deep = requests.get(f"{stack.api}/health", timeout=30)
    assert deep.status_code == 200, deep.text
    assert set(deep.json()["checks"].values()) == {"ok"} and deep.json()["dead_letters"] == 0
    shallow = requests.get(f"{stack.api}/health?deep=false", timeout=30)
    assert shallow.status_code == 200 and shallow.json()["checks"] == {}


def test_the_logs_command_tells_one_videos_story_across_processes(
    stack: StackProcess, tmp_path: Path
) -> None:
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_and_upload(make_clip(tmp_path / "trip.mp4", seconds=2))
    video, _ = user.wait_until_final(video_id)
    assert video["status"] == "ready", video["error"]
    stack.mail_to(user.email)

    told = subprocess.run(
        [sys.executable, "-m", "devstack", "logs", video_id, "--json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "VIDLINE_LOG_FILE": str(stack.log_path.with_name("logs.jsonl"))},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    entries = [json.loads(line) for line in told]
    assert entries[0]["service"] == "vidline-api" and entries[0]["message"].startswith(
        f"video {video_id} created"
    )
    assert {entry["service"] for entry in entries} == {"vidline-api", "vidline-workers"}
    assert all(entry["correlation_id"] == video_id for entry in entries)
    assert sum("its owner was emailed that it is ready" in entry["message"] for entry in entries) == 1
    # The console shows lines for people, with the id.
    assert f"[{video_id}] chalicelib.processing: video {video_id} encoded" in stack.log_tail(200_000)
