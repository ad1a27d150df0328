"""Watch while it encodes, on the real local stack (`python -m devstack` on free ports).

Uploads a 10 s 1080p clip, polls the API until the video is `playable` while
its status is still `processing`, and at that moment fetches what a player
fetches first: the signed master playlist through the CDN stand-in, a rung's
playlist, its init file and first segment (hls.js style: the master URL's
signing query appended to each URL under the stream's folder). Then the
video ends `ready` with one email.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from devstack.client import ApiClient, StackProcess
from tests.media_tools import make_clip

pytestmark = pytest.mark.e2e


def signed_like(master_url: str, relative: str, base: str) -> str:
    """`relative` resolved against `base`, with the master URL's signing query, as hls.js sends it."""
    return f"{urljoin(base, relative)}?{urlsplit(master_url).query}"


def uris(playlist: str) -> list[str]:
    """The URIs a playlist names, in order (EXT-X-MAP's init file first)."""
    found = []
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MAP:") and 'URI="' in line:
            found.append(line.split('URI="', 1)[1].split('"', 1)[0])
        elif line and not line.startswith("#"):
            found.append(line)
    return found


def test_a_player_fetches_the_stream_while_the_video_is_still_processing(
    stack: StackProcess, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "ten.mp4", seconds=10, size="1920x1080")
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_and_upload(clip)

    deadline = time.monotonic() + 120
    while not (video := user.video(video_id))["playable"]:
        assert video["status"] not in {"ready", "failed"}, f"final before playable: {video}"
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.1)
    assert video["status"] == "processing", video
    outputs = video["outputs"]
    assert outputs["renditions"] == []
    assert [rung["name"] for rung in outputs["rungs"]] == ["1080p", "720p", "480p", "360p"]

    # What a player fetches first, at once.
    master_url = outputs["hls_url"]
    assert master_url.startswith(f"{stack.cdn}/media/")
    master = requests.get(master_url, timeout=10)
    assert master.status_code == 200 and master.text.startswith("#EXTM3U"), master.text
    assert requests.get(master_url.split("?")[0], timeout=10).status_code == 403
    base = master_url.split("?")[0]
    rung_url = signed_like(master_url, uris(master.text)[0], base)
    rung = requests.get(rung_url, timeout=10)
    assert rung.status_code == 200 and "#EXT-X-PLAYLIST-TYPE:EVENT" in rung.text
    assert rung.headers["Cache-Control"] == "no-cache"
    init_uri, first_segment_uri = uris(rung.text)[:2]
    for uri in (init_uri, first_segment_uri):
        media = requests.get(signed_like(master_url, uri, rung_url.split("?")[0]), timeout=10)
        assert media.status_code == 200 and len(media.content) > 0, uri
    still = user.video(video_id)
    assert still["status"] == "processing", "the check came too late to show playback before ready"

    done, _ = user.wait_until_final(video_id, timeout_s=180)
    assert done["status"] == "ready" and done["playable"], done["error"]
    assert done["outputs"]["renditions"][0]["name"] == "720p"
    assert len(stack.mail_to(user.email)) == 1
