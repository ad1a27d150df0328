"""The API's use cases with in-memory fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import schemas
from chalicelib.domain import UPLOAD_EXPIRED_REASON, InvalidRequest, NotFound, Principal, VideoStatus
from chalicelib.services import VideoService, parse
from chalicelib.settings import Settings
from tests.fakes import FakePorts

ALICE = Principal(user_id="alice", email="alice@example.com")
BOB = Principal(user_id="bob", email="bob@example.com")


@pytest.fixture
def settings() -> Settings:
    return Settings(max_upload_bytes=1000, max_title_length=10, upload_url_ttl_s=300)


@pytest.fixture
def fakes() -> FakePorts:
    return FakePorts()


@pytest.fixture
def service(fakes: FakePorts, settings: Settings) -> VideoService:
    return fakes.container(settings).video_service


def create_request(settings: Settings, **overrides: object) -> schemas.CreateVideoRequest:
    body = {"title": "Trip", "filename": "trip.mov", "content_type": "video/quicktime", "size_bytes": 500}
    return parse(schemas.CreateVideoRequest, {**body, **overrides}, settings)


def test_create_presigns_the_upload_with_the_declared_size_and_type(
    service: VideoService, fakes: FakePorts, settings: Settings
) -> None:
    video, ticket = service.create(ALICE, create_request(settings))
    assert video.status is VideoStatus.AWAITING_UPLOAD and video.owner_email == ALICE.email
    assert fakes.uploads.presigned == [
        {"key": video.upload_key, "content_type": "video/quicktime", "max_bytes": 500, "expires_s": 300}
    ]
    assert ticket.max_bytes == 500
    assert service.get(ALICE, video.id) == video


def test_limits_come_from_settings(settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as too_big:
        create_request(settings, size_bytes=1001)
    assert too_big.value.details[0]["field"] == "size_bytes"
    with pytest.raises(InvalidRequest):
        create_request(settings, title="x" * 11)
    with pytest.raises(InvalidRequest):
        create_request(settings, content_type="application/pdf")
    assert create_request(settings, content_type=" Video/MP4 ").content_type == "video/mp4"


def test_only_the_owner_sees_a_video(service: VideoService, settings: Settings) -> None:
    video, _ = service.create(ALICE, create_request(settings))
    with pytest.raises(NotFound):
        service.get(BOB, video.id)
    with pytest.raises(NotFound):
        service.delete(BOB, video.id)
    with pytest.raises(NotFound):
        service.get(ALICE, "not-an-id")
    assert service.list(BOB, schemas.ListVideosQuery()).items == []


def test_delete_removes_the_record_and_every_object(
    service: VideoService, fakes: FakePorts, settings: Settings
) -> None:
    video, _ = service.create(ALICE, create_request(settings))
    uploads, media = fakes.uploads, fakes.media
    uploads.objects[video.upload_key] = (b"data", "video/quicktime")
    media.objects[f"{video.media_prefix}720p.mp4"] = (b"mp4", "video/mp4")
    media.objects["media/alice/other/720p.mp4"] = (b"keep", "video/mp4")
    service.delete(ALICE, video.id)
    assert uploads.objects == {}
    assert list(media.objects) == ["media/alice/other/720p.mp4"]
    with pytest.raises(NotFound):
        service.get(ALICE, video.id)


def test_outputs_are_shown_only_when_ready(service: VideoService, settings: Settings) -> None:
    video, _ = service.create(ALICE, create_request(settings))
    assert service.present(video).outputs is None


def test_a_video_whose_upload_can_no_longer_arrive_is_shown_as_failed(
    service: VideoService, settings: Settings
) -> None:
    video, _ = service.create(ALICE, create_request(settings))
    waiting = service.present(video)
    assert (waiting.status, waiting.error) == ("awaiting_upload", None)

    # The POST expired (300 s) and the grace for its event passed too.
    def created_ago(seconds: int) -> schemas.VideoOut:
        return service.present(video.with_changes(created_at=video.created_at - timedelta(seconds=seconds)))

    abandoned = created_ago(300 + 121)
    assert abandoned.status == "failed" and abandoned.error == UPLOAD_EXPIRED_REASON
    assert created_ago(300 + 60).status == "awaiting_upload"

    # A big file begun just before its link expired still has time to arrive at 1 Mbit/s.
    big = video.with_changes(source=replace(video.source, size_bytes=2 * 1024**3))
    still_arriving = big.with_changes(created_at=video.created_at - timedelta(hours=3))
    assert service.present(still_arriving).status == "awaiting_upload"
    given_up = big.with_changes(created_at=video.created_at - timedelta(hours=5))
    assert service.present(given_up).status == "failed"
