"""The API's use cases with in-memory fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib.api import schemas
from chalicelib.api.parse import parse
from chalicelib.api.present import Presenter
from chalicelib.domain import (
    UPLOAD_EXPIRED_REASON,
    InvalidRequest,
    NewVideo,
    NotFound,
    Outputs,
    Principal,
    Rendition,
    Rung,
    Video,
    VideoStatus,
)
from chalicelib.services import VideoService
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


@pytest.fixture
def shape(fakes: FakePorts, settings: Settings) -> Presenter:
    return Presenter(fakes.media_urls, settings)


def create_request(settings: Settings, **overrides: object) -> NewVideo:
    body = {"title": "Trip", "filename": "trip.mov", "content_type": "video/quicktime", "size_bytes": 500}
    request = parse(schemas.CreateVideoRequest, {**body, **overrides}, settings)
    return NewVideo(**request.model_dump())


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
    assert service.list(BOB, 20, None).items == []


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


def test_outputs_are_shown_only_when_ready(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    video, _ = service.create(ALICE, create_request(settings))
    assert shape.video(video).outputs is None


RUNGS = (Rung("720p", 1280, 720, 3_128_000), Rung("360p", 640, 360, 928_000))


def hls_outputs(video: Video, **changes: object) -> Outputs:
    """What a run has stored once its video is playable: HLS only, no MP4 yet."""
    outputs = Outputs(
        renditions=(),
        thumbnail_key=None,
        hls_master_key=f"{video.hls_prefix('run1')}master.m3u8",
        rungs=RUNGS,
    )
    return replace(outputs, **changes)


def test_a_playable_video_still_processing_shows_its_stream(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    created, _ = service.create(ALICE, create_request(settings))
    video = created.with_changes(
        status=VideoStatus.PROCESSING, progress=20, playable=True, outputs=hls_outputs(created)
    )

    shown = shape.video(video)

    assert (shown.status, shown.playable) == ("processing", True)
    assert shown.outputs is not None
    prefix = f"media/alice/{video.id}/run1/hls/"
    assert shown.outputs.hls_url == f"https://cdn.example/{prefix}master.m3u8?for={prefix}*"
    assert [r.model_dump() for r in shown.outputs.rungs] == [
        {"name": "720p", "width": 1280, "height": 720, "bandwidth": 3_128_000},
        {"name": "360p", "width": 640, "height": 360, "bandwidth": 928_000},
    ]
    assert (shown.outputs.renditions, shown.outputs.thumbnail_url) == ([], None)

    # The thumbnail shows as soon as it is stored, MP4 or not.
    thumbnailed = video.with_changes(
        outputs=hls_outputs(video, thumbnail_key=f"media/alice/{video.id}/run1/t.jpg")
    )
    shown_with_thumbnail = shape.video(thumbnailed).outputs
    assert shown_with_thumbnail is not None
    assert shown_with_thumbnail.thumbnail_url == f"https://cdn.example/media/alice/{video.id}/run1/t.jpg"


def test_a_ready_video_shows_its_stream_mp4_and_thumbnail(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    created, _ = service.create(ALICE, create_request(settings))
    mp4 = Rendition("720p", 1280, 720, f"media/alice/{created.id}/run1/720p.mp4")
    outputs = hls_outputs(
        created, renditions=(mp4,), thumbnail_key=f"media/alice/{created.id}/run1/thumbnail.jpg"
    )
    video = created.with_changes(status=VideoStatus.READY, progress=100, playable=True, outputs=outputs)

    shown = shape.video(video).model_dump(mode="json")

    assert shown["status"] == "ready" and shown["playable"] is True
    assert shown["outputs"]["renditions"] == [
        {"name": "720p", "width": 1280, "height": 720, "url": f"https://cdn.example/{mp4.key}"}
    ]
    assert shown["outputs"]["hls_url"].startswith(
        f"https://cdn.example/media/alice/{created.id}/run1/hls/master.m3u8?"
    )
    assert [r["name"] for r in shown["outputs"]["rungs"]] == ["720p", "360p"]
    assert (
        shown["outputs"]["thumbnail_url"]
        == f"https://cdn.example/media/alice/{created.id}/run1/thumbnail.jpg"
    )


def test_a_processing_video_not_yet_playable_shows_no_outputs(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    created, _ = service.create(ALICE, create_request(settings))
    # Outputs recorded, but the stream is not (or no longer) playable: nothing to show yet.
    video = created.with_changes(status=VideoStatus.PROCESSING, playable=False, outputs=hls_outputs(created))
    shown = shape.video(video)
    assert (shown.playable, shown.outputs) == (False, None)


def test_a_video_made_before_adaptive_streaming_shows_its_mp4_and_no_stream(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    created, _ = service.create(ALICE, create_request(settings))
    old = Outputs(
        renditions=(Rendition("720p", 1280, 720, "media/alice/v/720p.mp4"),),
        thumbnail_key="media/alice/v/t.jpg",
    )
    shown = shape.video(created.with_changes(status=VideoStatus.READY, progress=100, outputs=old))
    assert shown.playable is False and shown.outputs is not None
    assert (shown.outputs.hls_url, shown.outputs.rungs) == (None, [])
    assert shown.outputs.renditions[0].url == "https://cdn.example/media/alice/v/720p.mp4"
    assert shown.outputs.thumbnail_url == "https://cdn.example/media/alice/v/t.jpg"


def test_a_video_is_shown_in_its_stored_state_even_once_its_upload_window_passed(
    shape: Presenter, service: VideoService, settings: Settings
) -> None:
    # The abandoned-uploads job fails such a video for real (tests/unit/test_housekeeping.py);
    # the API no longer makes it read as failed while it is stored as waiting.
    video, _ = service.create(ALICE, create_request(settings))
    long_ago = video.with_changes(created_at=video.created_at - timedelta(hours=5))

    shown = shape.video(long_ago)

    assert (shown.status, shown.error) == ("awaiting_upload", None)
    failed = long_ago.with_changes(status=VideoStatus.FAILED, error=UPLOAD_EXPIRED_REASON)
    assert (shape.video(failed).status, shape.video(failed).error) == ("failed", UPLOAD_EXPIRED_REASON)
