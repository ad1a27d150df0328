"""The worker's use case with in-memory fakes: states, emails, retries."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain import Principal, SourceInfo, Video, VideoStatus, new_video_id, utcnow
from chalicelib.processing import UploadProcessor, uploaded_objects
from chalicelib.settings import Settings
from tests.fakes import FakePorts, FakeVideoRepository

OWNER = Principal(user_id="owner-1", email="owner@example.com")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(work_dir=str(tmp_path), max_duration_s=60, app_url="https://app.example")


@pytest.fixture
def fakes() -> FakePorts:
    return FakePorts()


@pytest.fixture
def processor(fakes: FakePorts, settings: Settings) -> UploadProcessor:
    """The worker's processor, wired by the composition root on fakes."""
    return fakes.container(settings).processor


def uploaded(fakes: FakePorts, data: bytes = b"video bytes", content_type: str = "video/mp4") -> Video:
    now = utcnow()
    video = Video(
        id=new_video_id(),
        owner_id=OWNER.user_id,
        owner_email=OWNER.email,
        title="Trip",
        status=VideoStatus.AWAITING_UPLOAD,
        progress=0,
        created_at=now,
        updated_at=now,
        source=SourceInfo(filename="trip.mp4", size_bytes=1000, content_type="video/mp4"),
    )
    fakes.videos.add(video)
    fakes.uploads.objects[video.upload_key] = (data, content_type)
    return video


def current(processor: UploadProcessor, video: Video) -> Video:
    found = processor.videos.get(video.owner_id, video.id)
    assert found is not None
    return found


def test_a_good_upload_becomes_ready_and_the_owner_gets_one_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video = uploaded(fakes)
    assert processor.process(video.upload_key, final_attempt=False) == "ready"
    done = current(processor, video)
    assert done.status is VideoStatus.READY and done.progress == 100
    assert done.source.duration_s == 4.0 and done.source.size_bytes == len(b"video bytes")
    assert done.outputs and done.outputs.renditions[0].name == "720p"
    assert set(fakes.media.objects) == {
        done.outputs.renditions[0].key,
        done.outputs.thumbnail_key,
    }
    mails = fakes.mailer.sent
    assert len(mails) == 1 and mails[0]["to"] == OWNER.email
    assert f"https://app.example/?video={video.id}" in mails[0]["text"]


class ProgressLog(FakeVideoRepository):
    """Remembers the progress each update left."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: list[int] = []

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        updated = super().update(video, expected=expected, **changes)
        self.progress.append(updated.progress)
        return updated


def test_progress_moves_forward_while_encoding(settings: Settings) -> None:
    videos = ProgressLog()
    fakes = FakePorts(videos=videos)
    fakes.container(settings).processor.process(uploaded(fakes).upload_key, final_attempt=False)
    progress = [p for p in videos.progress if 0 < p < 100]
    assert progress == sorted(progress) and len(set(progress)) >= 3


def test_a_second_delivery_does_nothing_more(processor: UploadProcessor, fakes: FakePorts) -> None:
    video = uploaded(fakes)
    processor.process(video.upload_key, final_attempt=False)
    assert processor.process(video.upload_key, final_attempt=False) == "duplicate"
    assert fakes.transcoder.encodes == 1
    assert len(fakes.mailer.sent) == 1


def test_an_email_that_failed_to_send_is_sent_on_the_retry(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.mailer.failures_left = 1
    video = uploaded(fakes)
    with pytest.raises(ConnectionError):
        processor.process(video.upload_key, final_attempt=False)
    assert current(processor, video).status is VideoStatus.READY
    assert processor.process(video.upload_key, final_attempt=False) == "duplicate"
    assert len(fakes.mailer.sent) == 1
    assert fakes.transcoder.encodes == 1


def test_rejected_media_fails_the_video_with_the_reason(processor: UploadProcessor, fakes: FakePorts) -> None:
    fakes.transcoder.reject_probe = "This file has no video, only audio."
    video = uploaded(fakes)
    assert processor.process(video.upload_key, final_attempt=False) == "failed"
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error == "This file has no video, only audio."
    (mail,) = fakes.mailer.sent
    assert "could not process" in mail["subject"] and failed.error in mail["text"]


@pytest.mark.parametrize(
    "data, content_type, words",
    [(b"", "video/mp4", "empty"), (b"x" * 2000, "video/mp4", "larger"), (b"x", "text/plain", "type")],
)
def test_the_stored_object_is_checked_against_the_declaration(
    processor: UploadProcessor, fakes: FakePorts, data: bytes, content_type: str, words: str
) -> None:
    video = uploaded(fakes, data, content_type)
    processor.process(video.upload_key, final_attempt=False)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and words in failed.error
    assert fakes.transcoder.encodes == 0


def test_too_long_a_video_is_rejected(processor: UploadProcessor, fakes: FakePorts) -> None:
    fakes.transcoder.info = replace(fakes.transcoder.info, duration_s=61, width=640, height=360)
    video = uploaded(fakes)
    processor.process(video.upload_key, final_attempt=False)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and "limit" in failed.error


def test_a_transient_error_is_retried_and_the_last_attempt_fails_the_video(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = OSError("disk full")
    video = uploaded(fakes)
    with pytest.raises(OSError):
        processor.process(video.upload_key, final_attempt=False)
    assert current(processor, video).status is VideoStatus.PROCESSING
    assert fakes.mailer.sent == []
    with pytest.raises(OSError):
        processor.process(video.upload_key, final_attempt=True)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and "attempts" in failed.error
    assert len(fakes.mailer.sent) == 1


def test_a_video_deleted_while_encoding_leaves_no_outputs_and_no_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video = uploaded(fakes)
    fakes.transcoder.during_encode = lambda: fakes.videos.delete(video.owner_id, video.id)
    assert processor.process(video.upload_key, final_attempt=False) == "ignored"
    assert fakes.media.objects == {}
    assert fakes.mailer.sent == []


@pytest.mark.parametrize("time_left_s, expected", [(None, 780), (900, 780), (400, 310), (60, 30)])
def test_ffmpeg_stops_in_time_to_record_the_outcome(
    processor: UploadProcessor, fakes: FakePorts, time_left_s: float | None, expected: float
) -> None:
    processor.process(uploaded(fakes).upload_key, final_attempt=False, time_left_s=time_left_s)
    assert fakes.transcoder.timeouts == [expected]


def test_only_one_of_two_racing_deliveries_sends_the_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video = uploaded(fakes)
    processor.process(video.upload_key, final_attempt=False)
    stale = current(processor, video).with_changes(notified_at=None)  # what a racing reader saw
    processor._notify_once(stale)
    assert len(fakes.mailer.sent) == 1


def test_unknown_keys_and_deleted_videos_are_ignored(processor: UploadProcessor, fakes: FakePorts) -> None:
    assert processor.process("somewhere/else", final_attempt=False) == "ignored"
    video = uploaded(fakes)
    fakes.videos.delete(video.owner_id, video.id)
    assert processor.process(video.upload_key, final_attempt=False) == "ignored"
    assert fakes.mailer.sent == []
    assert fakes.uploads.objects == {}  # the orphaned upload is gone


def test_s3_messages_are_unpacked_and_test_events_skipped() -> None:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Post",
                    "s3": {"bucket": {"name": "up"}, "object": {"key": "uploads/a/b/my+file%21"}},
                },
                {
                    "eventName": "ObjectRemoved:Delete",
                    "s3": {"bucket": {"name": "up"}, "object": {"key": "k"}},
                },
            ]
        }
    )
    assert [(o.bucket, o.key) for o in uploaded_objects(body)] == [("up", "uploads/a/b/my file!")]
    assert uploaded_objects(json.dumps({"Event": "s3:TestEvent"})) == []
    assert uploaded_objects("not json") == []
    assert uploaded_objects("[1]") == []
