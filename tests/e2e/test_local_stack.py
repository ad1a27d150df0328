"""The whole system as a developer runs it: `python -m devstack` on free ports.

Signs up, creates a video, uploads a generated clip over HTTP with the
presigned POST, waits for `ready`, downloads the rendition and checks its
codecs, size and the watermark in its pixels, the thumbnail, and the email.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from devstack.client import ROOT, ApiClient, StackProcess
from tests.media_tools import decode_frame, make_clip, probe

pytestmark = pytest.mark.e2e


def finish(stack: StackProcess, user: ApiClient, video_id: str) -> tuple[dict[str, Any], list[int]]:
    try:
        return user.wait_until_final(video_id)
    except TimeoutError:
        pytest.fail(f"video did not finish; stack log:\n{stack.log_tail()}")


def test_upload_encode_watermark_thumbnail_and_email(stack: StackProcess, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "holiday.mp4", seconds=3, size="1920x1080")
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_and_upload(source)
    video, progress = finish(stack, user, video_id)

    assert video["status"] == "ready", video["error"]
    assert progress == sorted(progress)
    assert video["source"]["width"] == 1920 and video["source"]["duration_s"] == pytest.approx(3, abs=0.1)
    (rendition,) = video["outputs"]["renditions"]
    assert (rendition["name"], rendition["width"], rendition["height"]) == ("720p", 1280, 720)

    # Media comes from the CDN stand-in, only through the signed URL.
    assert rendition["url"].startswith(f"{stack.cdn}/media/")
    assert requests.get(rendition["url"].split("?")[0], timeout=10).status_code == 403
    served = requests.get(rendition["url"], timeout=60)
    assert served.headers["Cache-Control"] == "max-age=31536000, immutable"
    out = tmp_path / "rendition.mp4"
    out.write_bytes(served.content)
    info = probe(str(out))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_s == pytest.approx(3, abs=0.5)

    # The watermark is burned into the bottom-right corner: there the
    # rendition differs from the source a lot, elsewhere hardly at all.
    # Frame 45 is 1.5 s in, at 30 fps in both files.
    frames = [decode_frame(str(path), (1280, 720), frame_number=45) for path in (out, source)]
    difference = np.abs(frames[0] - frames[1]).mean(axis=2)
    corner = difference[-150:, -400:]
    rest = difference[:-200, :-450]
    assert corner.mean() > 4 * rest.mean() and corner.max() > 100

    thumbnail = requests.get(video["outputs"]["thumbnail_url"], timeout=30).content
    assert thumbnail[:2] == b"\xff\xd8" and len(thumbnail) > 1000

    (mail,) = stack.mail_to(user.email)
    assert "is ready" in mail["subject"] and video_id in mail["text"]


def test_a_non_video_upload_fails_with_its_reason_emailed(stack: StackProcess, tmp_path: Path) -> None:
    fake = tmp_path / "slides.mp4"
    fake.write_bytes(b"%PDF-1.4 this is not a video\n" * 200)
    user = ApiClient.sign_up(stack.api)
    video, _ = finish(stack, user, user.create_and_upload(fake))
    assert video["status"] == "failed" and video["error"] and video["outputs"] is None
    (mail,) = stack.mail_to(user.email)
    assert video["error"] in mail["text"]


def test_the_api_answers_401_without_a_token_and_health_is_ok(stack: StackProcess) -> None:
    response = requests.get(f"{stack.api}/videos", timeout=30)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    response = requests.get(f"{stack.api}/videos", headers={"Authorization": "Bearer x.y.z"}, timeout=30)
    assert response.status_code == 401
    health = requests.get(f"{stack.api}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_a_job_interrupted_by_a_worker_restart_is_redone_and_emailed_once(
    stack: StackProcess, tmp_path: Path
) -> None:
    source = make_clip(tmp_path / "long.mp4", seconds=10, size="1920x1080")
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_and_upload(source)
    deadline = time.monotonic() + 60
    while user.video(video_id)["status"] != "processing":
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.05)
    # What saving a worker file does mid-encode: the stack restarts the pump.
    (ROOT / "workers" / "app.py").touch()

    video, _ = finish(stack, user, video_id)
    assert video["status"] == "ready", video["error"]
    assert "restarting the event pump" in stack.log_tail(100_000)
    assert len(stack.mail_to(user.email)) == 1
