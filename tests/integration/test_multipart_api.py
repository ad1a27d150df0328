"""Multipart uploads through the REST API on moto: the plan, part URLs, resume,
completion and every way a client can get it wrong; then the worker on the
completed object.

moto enforces S3's 5 MiB minimum for every part but the last, so these tests
lower the threshold and the part size (5 MiB) through settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from chalice.test import Client

from chalicelib.bootstrap import Container
from chalicelib.domain import Video, VideoStatus, utcnow
from chalicelib.processing import JOB_DIR_PREFIX
from chalicelib.settings import MIB, Settings
from tests.integration.test_api import Api, assert_error
from tests.integration.test_worker import Worker, drain
from tests.media_tools import make_noisy_clip

PART = 5 * MIB
# Three parts: two of 5 MiB and a last one of 1 MiB + 3 bytes.
SIZE = 2 * PART + MIB + 3


@pytest.fixture
def small(api_module: ModuleType, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The API with a 6 MiB multipart threshold and 5 MiB parts."""
    small = settings.model_copy(update={"multipart_threshold_bytes": 6 * MIB, "multipart_part_bytes": PART})
    monkeypatch.setattr(api_module, "settings", small)
    monkeypatch.setattr(api_module, "container", Container(small))
    return small


@pytest.fixture(scope="module")
def api(api_module: ModuleType) -> Iterator[Api]:
    with Client(api_module.app, stage_name="local") as client:
        yield Api(client)


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    return api.sign_up_and_log_in()


def payload(size: int = SIZE, seed: bytes = b"") -> bytes:
    """`size` bytes that differ from part to part (so ETags do)."""
    block = hashlib.sha256(seed or uuid.uuid4().bytes).digest()
    return (block * (size // len(block) + 1))[:size]


class Upload:
    """One multipart upload, driven as a client would."""

    def __init__(self, api: Api, token: str, data: bytes, *, declared: int | None = None):
        self.api, self.token, self.data = api, token, data
        status, created = api.create_video(token, size_bytes=declared or len(data))
        assert status == 201, created
        self.video_id: str = created["video"]["id"]
        self.plan: dict[str, Any] = created["upload"]
        self.etags: dict[int, str] = {}

    @property
    def path(self) -> str:
        return f"/videos/{self.video_id}/upload"

    def urls(self, numbers: list[int], token: str | None = None) -> tuple[int, Any]:
        return self.api.call(
            "POST", f"{self.path}/parts", {"part_numbers": numbers}, token=token or self.token
        )

    def chunk(self, number: int) -> bytes:
        size = self.plan["part_size"]
        return self.data[(number - 1) * size : number * size]

    def put(self, numbers: list[int], chunks: dict[int, bytes] | None = None) -> None:
        """PUT these parts (their bytes from the file, or `chunks`), keeping each ETag."""
        status, body = self.urls(numbers)
        assert status == 200, body
        assert [p["part_number"] for p in body["parts"]] == numbers
        for part in body["parts"]:
            number = part["part_number"]
            response = requests.put(
                part["url"], data=(chunks or {}).get(number, self.chunk(number)), timeout=30
            )
            assert response.status_code == 200, response.text
            self.etags[number] = response.headers["ETag"].strip('"')

    def listing(self, token: str | None = None) -> tuple[int, Any]:
        return self.api.call("GET", self.path, token=token or self.token)

    def complete(
        self, parts: list[dict[str, Any]] | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        if parts is None:
            parts = [{"part_number": n, "etag": e} for n, e in sorted(self.etags.items())]
        return self.api.call("POST", f"{self.path}/complete", {"parts": parts}, token=token or self.token)


def stored_record(api_module: ModuleType, token: str, video_id: str) -> Video | None:
    container = api_module.container
    found: Video | None = container.videos.get(container.identity.verify(token).user_id, video_id)
    return found


def open_uploads(aws: Any, settings: Settings, video_id: str) -> list[str]:
    listing = aws.s3.list_multipart_uploads(Bucket=settings.uploads_bucket, Prefix="uploads/")
    return [u["UploadId"] for u in listing.get("Uploads", []) if f"/{video_id}/" in u["Key"]]


# --- the plan ---


def test_below_the_threshold_the_upload_is_one_presigned_post(api: Api, token: str, small: Settings) -> None:
    status, created = api.create_video(token, size_bytes=6 * MIB - 1)
    assert status == 201, created
    assert created["upload"]["method"] == "post"
    assert {"url", "fields", "expires_at", "max_bytes"} <= set(created["upload"])


def test_at_the_threshold_the_upload_is_a_multipart_plan(
    api: Api, token: str, small: Settings, aws: Any, api_module: ModuleType
) -> None:
    before = utcnow()
    status, created = api.create_video(token, size_bytes=SIZE, content_type="video/webm")
    assert status == 201, created
    upload = created["upload"]
    assert set(upload) == {"method", "upload_id", "part_size", "part_count", "expires_at"}
    assert upload["method"] == "multipart"
    assert (upload["part_size"], upload["part_count"]) == (PART, 3)
    window = timedelta(seconds=small.multipart_upload_ttl_s)
    expires = parse_time(created["upload"]["expires_at"])
    assert before + window - timedelta(seconds=5) <= expires <= utcnow() + window
    # S3 has the upload open, for the video's key and with the declared type.
    video_id = created["video"]["id"]
    assert open_uploads(aws, small, video_id) == [upload["upload_id"]]
    record = stored_record(api_module, token, video_id)
    assert record is not None and record.multipart is not None
    assert record.multipart.upload_id == upload["upload_id"]

    status, created = api.create_video(token, size_bytes=6 * MIB)
    assert created["upload"]["method"] == "multipart" and created["upload"]["part_count"] == 2


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the happy paths ---


def test_parts_upload_and_complete_into_the_declared_file(
    api: Api, token: str, small: Settings, aws: Any, api_module: ModuleType
) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])

    status, video = upload.complete()

    assert status == 200, video
    assert video["id"] == upload.video_id and video["status"] == "queued"
    stored = aws.s3.get_object(Bucket=small.uploads_bucket, Key=f"{upload_key(api_module, token, upload)}")
    assert stored["Body"].read() == upload.data
    assert stored["ContentType"] == "video/mp4"
    etag = stored["ETag"].strip('"')
    assert etag.endswith("-3")
    record = stored_record(api_module, token, upload.video_id)
    assert record is not None and record.upload_etag == etag and record.status is VideoStatus.QUEUED
    assert open_uploads(aws, small, upload.video_id) == []


def upload_key(api_module: ModuleType, token: str, upload: Upload) -> str:
    record = stored_record(api_module, token, upload.video_id)
    assert record is not None
    return record.upload_key


def test_a_client_that_lost_its_state_resumes_from_the_listing(api: Api, token: str, small: Settings) -> None:
    first = Upload(api, token, payload())
    first.put([1, 3])

    # A new client knows only the video id: it asks what S3 holds.
    status, listing = first.listing()
    assert status == 200, listing
    assert listing["upload_id"] == first.plan["upload_id"]
    assert (listing["part_size"], listing["part_count"]) == (PART, 3)
    assert listing["parts"] == [
        {"part_number": 1, "etag": first.etags[1], "size": PART},
        {"part_number": 3, "etag": first.etags[3], "size": MIB + 3},
    ]
    resumed = Upload.__new__(Upload)
    resumed.api, resumed.token, resumed.data = api, token, first.data
    resumed.video_id, resumed.plan = first.video_id, listing
    resumed.etags = {p["part_number"]: p["etag"] for p in listing["parts"]}
    missing = sorted(set(range(1, listing["part_count"] + 1)) - set(resumed.etags))
    assert missing == [2]
    resumed.put(missing)

    status, video = resumed.complete()
    assert status == 200 and video["status"] == "queued", video


def test_a_part_uploaded_again_replaces_the_first(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3], chunks={2: payload(PART)})
    stale = upload.etags[2]
    upload.put([2])  # the right bytes this time
    assert upload.etags[2] != stale
    _, listing = upload.listing()
    assert [p["etag"] for p in listing["parts"]] == [upload.etags[1], upload.etags[2], upload.etags[3]]
    assert upload.complete()[0] == 200


# --- part URLs ---


def test_part_urls_come_in_batches_for_the_plans_part_numbers(api: Api, token: str, small: Settings) -> None:
    big = Upload(api, token, b"", declared=small.max_upload_bytes)  # 10 GiB: 2,048 parts of 5 MiB
    assert big.plan["part_count"] == -(-small.max_upload_bytes // PART)
    status, body = big.urls(list(range(1, 101)))
    assert status == 200 and len(body["parts"]) == 100
    for part in body["parts"]:
        assert f"partNumber={part['part_number']}" in part["url"]
        assert f"uploadId={big.plan['upload_id']}" in part["url"]
        assert "X-Amz-Signature=" in part["url"] and "X-Amz-Expires=3600" in part["url"]
        assert parse_time(part["expires_at"]) <= utcnow() + timedelta(seconds=3601)

    assert_error(*big.urls(list(range(1, 102))), 400, "invalid_request")  # over the batch size
    assert_error(*big.urls([]), 400, "invalid_request")
    status, body = big.urls([0, 5, big.plan["part_count"] + 1])
    assert_error(status, body, 400, "invalid_part_numbers")
    assert "0" in body["error"]["message"] and str(big.plan["part_count"] + 1) in body["error"]["message"]
    assert_error(*big.urls([4, 4]), 400, "duplicate_parts")
    for bad in ({"part_numbers": ["1"]}, {"part_numbers": 1}, {"parts": [1]}, {"part_numbers": [True]}):
        status, body = api.call("POST", f"{big.path}/parts", bad, token=token)
        assert_error(status, body, 400, "invalid_request")


def test_part_urls_never_outlive_the_upload(
    api: Api, token: str, small: Settings, api_module: ModuleType
) -> None:
    upload = Upload(api, token, payload())
    record = stored_record(api_module, token, upload.video_id)
    assert record is not None and record.multipart is not None
    closing = replace(record.multipart, expires_at=utcnow() + timedelta(minutes=10))
    api_module.container.videos.update(record, multipart=closing)
    status, body = upload.urls([1])
    assert status == 200, body
    assert 590 <= int(body["parts"][0]["url"].split("X-Amz-Expires=")[1].split("&")[0]) <= 600


# --- completing: every way to get it wrong ---


def test_a_list_that_leaves_out_parts_is_refused_and_the_upload_stays_open(
    api: Api, token: str, small: Settings, aws: Any
) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    status, body = upload.complete([{"part_number": 1, "etag": upload.etags[1]}])
    assert_error(status, body, 400, "missing_parts")
    assert "parts 2, 3" in body["error"]["message"]
    assert open_uploads(aws, small, upload.video_id) == [upload.plan["upload_id"]]
    assert upload.complete()[0] == 200


def test_parts_not_uploaded_yet_are_named(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1])
    parts = [{"part_number": n, "etag": upload.etags[1]} for n in (1, 2, 3)]
    status, body = upload.complete(parts)
    assert_error(status, body, 400, "missing_parts")
    assert "parts 2, 3" in body["error"]["message"] and "uploaded" in body["error"]["message"]


def test_duplicate_and_unknown_part_numbers_are_refused(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    twice = [{"part_number": n, "etag": upload.etags[n]} for n in (1, 2, 2, 3)]
    assert_error(*upload.complete(twice), 400, "duplicate_parts")
    extra = [{"part_number": n, "etag": upload.etags.get(n, "x")} for n in (1, 2, 3, 4)]
    assert_error(*upload.complete(extra), 400, "invalid_part_numbers")
    for bad in (
        [],
        [{"part_number": 1}],
        [{"part_number": "1", "etag": "x"}],
        [{"part_number": 0, "etag": "x"}],
    ):
        status, body = upload.complete(bad)
        assert_error(status, body, 400, "invalid_request")
    assert upload.complete()[0] == 200


def test_a_wrong_etag_is_refused(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    parts = [{"part_number": n, "etag": upload.etags[n]} for n in (1, 2, 3)]
    parts[1]["etag"] = hashlib.md5(b"something else").hexdigest()
    status, body = upload.complete(parts)
    assert_error(status, body, 400, "etag_mismatch")
    assert "part 2 " in body["error"]["message"]
    # Quoted ETags, as S3's response header has them, are fine.
    quoted = [{"part_number": n, "etag": f'"{upload.etags[n]}"'} for n in (1, 2, 3)]
    assert upload.complete(quoted)[0] == 200


def test_parts_of_another_video_do_not_complete_this_one(api: Api, token: str, small: Settings) -> None:
    data = payload()
    mine, other = Upload(api, token, data), Upload(api, token, data)
    other.put([1, 2, 3])
    # Same bytes, so same ETags: but this video's upload holds no parts at all.
    status, body = mine.complete([{"part_number": n, "etag": e} for n, e in other.etags.items()])
    assert_error(status, body, 400, "missing_parts")
    # With its own first part, another video's ETags for the others still do not count.
    mine.put([1], chunks={1: payload(PART)})
    status, body = mine.complete(
        [
            {"part_number": 1, "etag": mine.etags[1]},
            *({"part_number": n, "etag": other.etags[n]} for n in (2, 3)),
        ]
    )
    assert_error(status, body, 400, "missing_parts")


def test_another_users_upload_is_not_found(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    stranger = api.sign_up_and_log_in()
    assert_error(*upload.urls([1], token=stranger), 404, "not_found")
    assert_error(*upload.listing(token=stranger), 404, "not_found")
    assert_error(*upload.complete(token=stranger), 404, "not_found")
    assert upload.complete()[0] == 200


def test_completing_twice_is_a_conflict(api: Api, token: str, small: Settings) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    assert upload.complete()[0] == 200
    assert_error(*upload.complete(), 409, "upload_completed")
    assert_error(*upload.urls([1]), 409, "upload_completed")
    assert_error(*upload.listing(), 409, "upload_completed")


def test_deleting_the_video_aborts_its_upload_and_completing_after_is_not_found(
    api: Api, token: str, small: Settings, aws: Any
) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2])
    status, _ = api.call("DELETE", f"/videos/{upload.video_id}", token=token)
    assert status == 204
    assert open_uploads(aws, small, upload.video_id) == []  # its parts are freed
    assert_error(*upload.complete(), 404, "not_found")
    assert_error(*upload.listing(), 404, "not_found")


def test_a_total_size_other_than_declared_is_refused_and_nothing_is_stored(
    api: Api, token: str, small: Settings, aws: Any, api_module: ModuleType
) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3], chunks={3: payload(2 * MIB)})  # a last part 1 MiB too long
    status, body = upload.complete()
    assert_error(status, body, 400, "size_mismatch")
    assert str(SIZE) in body["error"]["message"] and str(2 * PART + 2 * MIB) in body["error"]["message"]
    key = upload_key(api_module, token, upload)
    assert aws.s3.list_objects_v2(Bucket=small.uploads_bucket, Prefix=key)["KeyCount"] == 0
    assert open_uploads(aws, small, upload.video_id) == [upload.plan["upload_id"]]

    # Parts off the plan that happen to add up are refused too (5 MiB + 1 MiB, then 5 MiB + 3 bytes).
    odd = Upload(api, token, payload())
    odd.put([1, 2, 3], chunks={2: odd.data[PART : PART + MIB], 3: odd.data[PART + MIB :]})
    status, body = odd.complete()
    assert_error(status, body, 400, "size_mismatch")
    assert "parts 2, 3" in body["error"]["message"]


def test_a_video_that_uploads_by_post_has_no_multipart_routes(api: Api, token: str, small: Settings) -> None:
    _, created = api.create_video(token, size_bytes=1000)
    path = f"/videos/{created['video']['id']}/upload"
    assert_error(*api.call("POST", f"{path}/parts", {"part_numbers": [1]}, token=token), 409, "not_multipart")
    assert_error(*api.call("GET", path, token=token), 409, "not_multipart")
    body = {"parts": [{"part_number": 1, "etag": "x"}]}
    assert_error(*api.call("POST", f"{path}/complete", body, token=token), 409, "not_multipart")


def test_an_upload_open_too_long_is_given_up(
    api: Api, token: str, small: Settings, api_module: ModuleType, aws: Any
) -> None:
    upload = Upload(api, token, payload())
    upload.put([1, 2, 3])
    record = stored_record(api_module, token, upload.video_id)
    assert record is not None and record.multipart is not None
    past = replace(record.multipart, expires_at=utcnow() - timedelta(hours=1))
    api_module.container.videos.update(record, multipart=past)
    assert_error(*upload.complete(), 409, "upload_gone")
    # The abandoned-uploads job fails it, frees its parts and tells its owner.
    later = dataclasses.replace(
        api_module.container.housekeeping, clock=lambda: utcnow() + timedelta(hours=2)
    )
    assert later.abandon_expired_uploads().changed >= 1
    _, video = api.call("GET", f"/videos/{upload.video_id}", token=token)
    assert video["status"] == "failed" and "expired" in video["error"]
    assert not aws.s3.list_multipart_uploads(Bucket=small.uploads_bucket, Prefix=record.upload_prefix).get(
        "Uploads"
    )

    # One aborted behind the API's back (the bucket's lifecycle rule) is gone too.
    aborted = Upload(api, token, payload())
    aborted.put([1, 2, 3])
    key = upload_key(api_module, token, aborted)
    aws.s3.abort_multipart_upload(Bucket=small.uploads_bucket, Key=key, UploadId=aborted.plan["upload_id"])
    assert_error(*aborted.complete(), 409, "upload_gone")
    assert_error(*aborted.listing(), 409, "upload_gone")


def test_the_openapi_document_describes_the_multipart_routes(api: Api) -> None:
    status, doc = api.call("GET", "/openapi.json")
    assert status == 200
    assert "post" in doc["paths"]["/videos/{video_id}/upload/parts"]
    assert "get" in doc["paths"]["/videos/{video_id}/upload"]
    assert "post" in doc["paths"]["/videos/{video_id}/upload/complete"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["MultipartUploadOut"]["properties"]) == {
        "method",
        "upload_id",
        "part_size",
        "part_count",
        "expires_at",
    }
    assert set(schemas["MultipartStatusOut"]["properties"]) >= {
        "upload_id",
        "part_size",
        "part_count",
        "parts",
    }
    assert schemas["PartUrlsRequest"]["properties"]["part_numbers"]["maxItems"] == 100


# --- the worker on a multipart object ---


def test_a_multipart_upload_is_processed_from_its_event_and_the_job_never_holds_the_source(
    api: Api,
    token: str,
    small: Settings,
    workers_module: ModuleType,
    aws: Any,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real video in 3 parts: the CompleteMultipartUpload event starts the job,
    probing and limits take the "md5-3" ETag and the stored size, and the job's
    directory never holds more than a fraction of the source: it is streamed."""
    source = make_noisy_clip(tmp_path / "noisy.mp4", seconds=2)
    data = source.read_bytes()
    assert 2 * PART < len(data) <= 3 * PART, len(data)  # 3 parts
    for name in (settings.jobs_queue, settings.jobs_dlq):
        drain(aws.sqs, aws.sqs.get_queue_url(QueueName=name)["QueueUrl"])
    upload = Upload(api, token, data)
    assert upload.plan["part_count"] == 3
    upload.put(list(range(1, upload.plan["part_count"] + 1)))
    assert upload.complete()[0] == 200

    work_dir = tmp_path / "work"
    work_dir.mkdir()
    worker_settings = settings.model_copy(
        update={"work_dir": str(work_dir), "ladder": (360,), "rendition_short_side_px": 360}
    )
    with Client(workers_module.app, stage_name="local") as client:
        worker = Worker(workers_module, client, aws, settings)
        worker.rewire(monkeypatch, worker_settings)
        message = worker.receive()
        record = json.loads(message["Body"])["Records"][0]["s3"]["object"]
        assert upload.video_id in record["key"] and record["eTag"].endswith("-3")
        with PeakSize(work_dir) as peak:
            worker.invoke(message)

    _, video = api.call("GET", f"/videos/{upload.video_id}", token=token)
    assert video["status"] == "ready", video
    assert video["source"]["size_bytes"] == len(data) and video["source"]["width"] == 640
    assert video["source"]["duration_s"] == pytest.approx(2.0, abs=0.1)
    # What the job's directory held at most, against the source it encoded.
    assert 0 < peak.bytes < len(data) / 4, (peak.bytes, len(data))


class PeakSize:
    """Samples the bytes of every file under `folder` while in use; `bytes` is the most seen."""

    def __init__(self, folder: Path, every_s: float = 0.01):
        self.folder, self.every_s = folder, every_s
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for root, _, files in os.walk(self.folder):
                if JOB_DIR_PREFIX not in root:
                    continue
                for name in files:
                    with contextlib.suppress(FileNotFoundError):  # deleted once stored
                        total += os.stat(os.path.join(root, name)).st_size
            self.bytes = max(self.bytes, total)
            time.sleep(self.every_s)
