"""A multipart upload that survives losing its client, on the running local stack.

Parts go to the presigned URLs the API hands out, which point at the stack's
enforcing S3 front (devstack.s3front), as a browser's would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from chalicelib.domain import upload_key
from chalicelib.settings import MIB, Settings
from devstack.aws import local_client
from devstack.client import ApiClient, StackProcess
from tests.media_tools import make_noisy_clip

pytestmark = pytest.mark.e2e

PART = 5 * MIB


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """The stack with a 6 MiB multipart threshold and 5 MiB parts (S3's smallest)."""
    env = {"VIDLINE_MULTIPART_THRESHOLD_BYTES": str(6 * MIB), "VIDLINE_MULTIPART_PART_BYTES": str(PART)}
    with StackProcess(tmp_path_factory.mktemp("stack") / "stack.log", env=env) as running:
        yield running
    assert running.exit_code == 0, running.log_tail()


class PartClient:
    """A client of the multipart routes that remembers nothing between calls but what it is given."""

    def __init__(self, api: ApiClient, video_id: str, s3_front: str):
        self.api, self.video_id, self.s3_front = api, video_id, s3_front
        self.base = f"{api.base_url}/videos/{video_id}/upload"

    def send(self, method: str, path: str = "", body: Any = None) -> Any:
        response = requests.request(method, self.base + path, json=body, headers=self.api.headers, timeout=30)
        assert response.ok, response.text
        return response.json()

    def put_parts(self, data: bytes, part_size: int, numbers: list[int]) -> dict[int, str]:
        """PUT these parts of `data` to their presigned URLs; their ETags."""
        urls = self.send("POST", "/parts", {"part_numbers": numbers})["parts"]
        etags = {}
        for part in urls:
            number = part["part_number"]
            assert part["url"].startswith(self.s3_front), part["url"]  # not straight to moto
            chunk = data[(number - 1) * part_size : number * part_size]
            sent = requests.put(part["url"], data=chunk, timeout=60)
            assert sent.status_code == 200, sent.text
            etags[number] = sent.headers["ETag"].strip('"')
        return etags


def test_an_upload_resumes_after_its_client_is_lost_and_the_video_becomes_ready(
    stack: StackProcess, tmp_path: Path
) -> None:
    clip = make_noisy_clip(tmp_path / "trip.mp4", seconds=3)
    data = clip.read_bytes()
    api = ApiClient.sign_up(stack.api)
    created = api.create_video(clip)
    plan, video_id = created["upload"], created["video"]["id"]
    assert plan["method"] == "multipart" and plan["part_size"] == PART
    count = plan["part_count"]
    assert count >= 3, len(data)
    assert plan["expires_at"]

    # The first client sends half the parts, then is lost with all it knew.
    front = f"http://127.0.0.1:{stack.ports['S3_FRONT']}/"
    first = PartClient(api, video_id, front)
    half = list(range(1, count // 2 + 1))
    first.put_parts(data, PART, half)
    del first

    # A new client, with only the video id and the file: what does S3 hold?
    resumed = PartClient(api, video_id, front)
    listing = resumed.send("GET")
    assert (listing["upload_id"], listing["part_count"]) == (plan["upload_id"], count)
    held = {part["part_number"]: part["etag"] for part in listing["parts"]}
    assert sorted(held) == half
    assert all(part["size"] == PART for part in listing["parts"])
    rest = [n for n in range(1, count + 1) if n not in held]
    etags = held | resumed.put_parts(data, listing["part_size"], rest)

    video = resumed.send(
        "POST", "/complete", {"parts": [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]}
    )
    assert video["status"] == "queued"

    final, _ = api.wait_until_final(video_id, timeout_s=180)
    assert final["status"] == "ready", final
    assert final["source"]["size_bytes"] == len(data)
    assert final["outputs"]["hls_url"] and final["outputs"]["renditions"]

    # The stored source is the file, byte for byte (the stack runs with default names).
    defaults = Settings.model_construct()
    s3 = local_client("s3", f"http://127.0.0.1:{stack.ports['MOTO']}", defaults.region)
    owner = jwt.decode(api.token, options={"verify_signature": False})["sub"]
    stored = s3.get_object(Bucket=defaults.uploads_bucket, Key=upload_key(owner, video_id))
    assert stored["Body"].read() == data
    assert stored["ETag"].strip('"').endswith(f"-{count}")
