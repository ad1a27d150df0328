"""The whole system as a developer runs it: `python -m devstack` on free ports.

Signs up, creates a video, uploads a generated clip over HTTP with the
presigned POST, waits for `ready`, downloads the rendition and checks its
codecs, size and the watermark in its pixels, the thumbnail, and the email.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from chalicelib import media
from tests.conftest import ROOT, free_port, make_clip

pytestmark = pytest.mark.e2e

READY_LINE = "Vidline local stack is ready"
PASSWORD = "Corr3ct-Horse!"


@dataclass
class Stack:
    api: str
    mailbox: str
    log: Path

    def messages_to(self, email: str) -> list[dict[str, Any]]:
        messages = requests.get(f"{self.mailbox}/api/messages", timeout=10).json()
        return [m for m in messages if email in m["to"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = {name: free_port() for name in ("API", "MOTO", "MAILBOX", "CDN")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDLINE_", "AWS_"))}
    env.update({f"VIDLINE_{name}_PORT": str(port) for name, port in ports.items()})
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while READY_LINE not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local stack did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Stack(
            api=f"http://127.0.0.1:{ports['API']}",
            mailbox=f"http://127.0.0.1:{ports['MAILBOX']}",
            log=log,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-3000:]


def sign_up(stack: Stack) -> tuple[str, str]:
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    response = requests.post(f"{stack.api}/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, response.text
    response = requests.post(f"{stack.api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    return email, response.json()["id_token"]


def create_and_upload(stack: Stack, token: str, path: Path, content_type: str = "video/mp4") -> str:
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "title": "E2E clip",
        "filename": path.name,
        "content_type": content_type,
        "size_bytes": path.stat().st_size,
    }
    response = requests.post(f"{stack.api}/videos", json=body, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    created = response.json()
    upload = created["upload"]
    with path.open("rb") as file:
        # Every policy field first, the file last, as a browser form would.
        sent = requests.post(
            upload["url"],
            data=upload["fields"],
            files={"file": (path.name, file, content_type)},
            timeout=60,
        )
    assert sent.status_code in (200, 201, 204), sent.text
    video_id: str = created["video"]["id"]
    return video_id


def wait_until_final(stack: Stack, token: str, video_id: str, timeout_s: float = 120) -> tuple[dict[str, Any], list[int]]:
    headers = {"Authorization": f"Bearer {token}"}
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video = requests.get(f"{stack.api}/videos/{video_id}", headers=headers, timeout=30).json()
        seen.append(video["progress"])
        if video["status"] in ("ready", "failed"):
            return video, seen
        time.sleep(0.25)
    raise AssertionError(f"video {video_id} did not finish; stack log:\n{stack.log.read_text()[-3000:]}")


def frame_rgb(path: Path, at_s: float, width: int, height: int) -> np.ndarray:
    """One decoded frame, scaled to width×height, as an RGB array."""
    raw = subprocess.run(
        [media.ffmpeg_exe(), "-v", "error", "-ss", str(at_s), "-i", str(path), "-frames:v", "1",
         "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).astype(np.int16)


def test_upload_encode_watermark_thumbnail_and_email(stack: Stack, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "holiday.mp4", seconds=3, size="1920x1080")
    email, token = sign_up(stack)
    video_id = create_and_upload(stack, token, source)
    video, progress = wait_until_final(stack, token, video_id)

    assert video["status"] == "ready", video["error"]
    assert progress == sorted(progress)
    assert video["source"]["width"] == 1920 and video["source"]["duration_s"] == pytest.approx(3, abs=0.1)
    (rendition,) = video["outputs"]["renditions"]
    assert (rendition["name"], rendition["width"], rendition["height"]) == ("720p", 1280, 720)

    out = tmp_path / "rendition.mp4"
    out.write_bytes(requests.get(rendition["url"], timeout=60).content)
    info = media.probe(str(out))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_s == pytest.approx(3, abs=0.5)

    # The watermark is burned into the bottom-right corner: there the
    # rendition differs from the source a lot, elsewhere hardly at all.
    difference = np.abs(frame_rgb(out, 1.5, 1280, 720) - frame_rgb(source, 1.5, 1280, 720)).mean(axis=2)
    corner = difference[-150:, -400:]
    rest = difference[:-200, :-450]
    assert corner.mean() > 4 * rest.mean() and corner.max() > 100

    thumbnail = requests.get(video["outputs"]["thumbnail_url"], timeout=30).content
    assert thumbnail[:2] == b"\xff\xd8" and len(thumbnail) > 1000

    (mail,) = stack.messages_to(email)
    assert "is ready" in mail["subject"] and video_id in mail["text"]


def test_a_non_video_upload_fails_with_its_reason_emailed(stack: Stack, tmp_path: Path) -> None:
    fake = tmp_path / "slides.mp4"
    fake.write_bytes(b"%PDF-1.4 this is not a video\n" * 200)
    email, token = sign_up(stack)
    video_id = create_and_upload(stack, token, fake)
    video, _ = wait_until_final(stack, token, video_id)
    assert video["status"] == "failed" and video["error"] and video["outputs"] is None
    (mail,) = stack.messages_to(email)
    assert video["error"] in mail["text"]


def test_the_api_answers_401_without_a_token_and_health_is_ok(stack: Stack) -> None:
    response = requests.get(f"{stack.api}/videos", timeout=30)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    response = requests.get(f"{stack.api}/videos", headers={"Authorization": "Bearer x.y.z"}, timeout=30)
    assert response.status_code == 401
    health = requests.get(f"{stack.api}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
