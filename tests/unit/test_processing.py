"""The worker's use case with in-memory fakes: states, emails, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.domain import Principal, SourceInfo, Video, VideoStatus, new_video_id, utcnow
from chalicelib.processing import UploadProcessor, uploaded_objects
from chalicelib.settings import Settings
from tests.fakes import FakeBlobStore, FakeMailer, FakeTranscoder, FakeVideoRepository

OWNER = Principal(user_id="owner-1", email="owner@example.com")


@pytest.fixture
def processor(tmp_path: Path) -> UploadProcessor:
    return UploadProcessor(
        videos=FakeVideoRepository(),
        uploads=FakeBlobStore(),
        media=FakeBlobStore(),
        mailer=FakeMailer(),
        transcoder=FakeTranscoder(),
        settings=Settings(work_dir=str(tmp_path), max_duration_s=60, app_url="https://app.example"),
        watermark_path="unused.png",
    )


def uploaded(
    processor: UploadProcessor, data: bytes = b"video bytes", content_type: str = "video/mp4"
) -> Video:
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
    processor.videos.add(video)
    processor.uploads.objects[video.upload_key] = (data, content_type)  # type: ignore[attr-defined]
    return video


def current(processor: UploadProcessor, video: Video) -> Video:
    found = processor.videos.get(video.owner_id, video.id)
    assert found is not None
    return found


def test_a_good_upload_becomes_ready_and_the_owner_gets_one_email(processor: UploadProcessor) -> None:
    video = uploaded(processor)
    assert processor.process(video.upload_key, final_attempt=False) == "ready"
    done = current(processor, video)
    assert done.status is VideoStatus.READY and done.progress == 100
    assert done.source.duration_s == 4.0 and done.source.size_bytes == len(b"video bytes")
    assert done.outputs and done.outputs.renditions[0].name == "720p"
    assert set(processor.media.objects) == {  # type: ignore[attr-defined]
        done.outputs.renditions[0].key,
        done.outputs.thumbnail_key,
    }
    mails = processor.mailer.sent  # type: ignore[attr-defined]
    assert len(mails) == 1 and mails[0]["to"] == OWNER.email
    assert f"https://app.example/?video={video.id}" in mails[0]["text"]


def test_progress_moves_forward_while_encoding(processor: UploadProcessor) -> None:
    seen: list[int] = []
    videos = processor.videos
    original = videos.update

    def spy(video: Video, **kwargs: object) -> Video:
        updated = original(video, **kwargs)  # type: ignore[arg-type]
        seen.append(updated.progress)
        return updated

    videos.update = spy  # type: ignore[method-assign]
    processor.process(uploaded(processor).upload_key, final_attempt=False)
    progress = [p for p in seen if 0 < p < 100]
    assert progress == sorted(progress) and len(set(progress)) >= 3


def test_a_second_delivery_does_nothing_more(processor: UploadProcessor) -> None:
    video = uploaded(processor)
    processor.process(video.upload_key, final_attempt=False)
    assert processor.process(video.upload_key, final_attempt=False) == "duplicate"
    assert processor.transcoder.encodes == 1  # type: ignore[attr-defined]
    assert len(processor.mailer.sent) == 1  # type: ignore[attr-defined]


def test_an_email_that_failed_to_send_is_sent_on_the_retry(processor: UploadProcessor) -> None:
    processor.mailer.failures_left = 1  # type: ignore[attr-defined]
    video = uploaded(processor)
    with pytest.raises(ConnectionError):
        processor.process(video.upload_key, final_attempt=False)
    assert current(processor, video).status is VideoStatus.READY
    assert processor.process(video.upload_key, final_attempt=False) == "duplicate"
    assert len(processor.mailer.sent) == 1  # type: ignore[attr-defined]
    assert processor.transcoder.encodes == 1  # type: ignore[attr-defined]


def test_rejected_media_fails_the_video_with_the_reason(processor: UploadProcessor) -> None:
    processor.transcoder.reject_probe = "This file has no video, only audio."  # type: ignore[attr-defined]
    video = uploaded(processor)
    assert processor.process(video.upload_key, final_attempt=False) == "failed"
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error == "This file has no video, only audio."
    (mail,) = processor.mailer.sent  # type: ignore[attr-defined]
    assert "could not process" in mail["subject"] and failed.error in mail["text"]


@pytest.mark.parametrize(
    "data, content_type, words",
    [(b"", "video/mp4", "empty"), (b"x" * 2000, "video/mp4", "larger"), (b"x", "text/plain", "type")],
)
def test_the_stored_object_is_checked_against_the_declaration(
    processor: UploadProcessor, data: bytes, content_type: str, words: str
) -> None:
    video = uploaded(processor, data, content_type)
    processor.process(video.upload_key, final_attempt=False)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and words in failed.error
    assert processor.transcoder.encodes == 0  # type: ignore[attr-defined]


def test_too_long_a_video_is_rejected(processor: UploadProcessor) -> None:
    processor.transcoder.info = processor.transcoder.info.__class__(  # type: ignore[attr-defined]
        duration_s=61, width=640, height=360, video_codec="h264", audio_codec=None, rotation=0
    )
    video = uploaded(processor)
    processor.process(video.upload_key, final_attempt=False)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and "limit" in failed.error


def test_a_transient_error_is_retried_and_the_last_attempt_fails_the_video(
    processor: UploadProcessor,
) -> None:
    processor.transcoder.encode_error = OSError("disk full")  # type: ignore[attr-defined]
    video = uploaded(processor)
    with pytest.raises(OSError):
        processor.process(video.upload_key, final_attempt=False)
    assert current(processor, video).status is VideoStatus.PROCESSING
    assert processor.mailer.sent == []  # type: ignore[attr-defined]
    with pytest.raises(OSError):
        processor.process(video.upload_key, final_attempt=True)
    failed = current(processor, video)
    assert failed.status is VideoStatus.FAILED and failed.error and "attempts" in failed.error
    assert len(processor.mailer.sent) == 1  # type: ignore[attr-defined]


def test_a_video_deleted_while_encoding_leaves_no_outputs_and_no_email(processor: UploadProcessor) -> None:
    video = uploaded(processor)
    transcoder = processor.transcoder
    assert isinstance(transcoder, FakeTranscoder)
    transcoder.during_encode = lambda: processor.videos.delete(video.owner_id, video.id)
    assert processor.process(video.upload_key, final_attempt=False) == "ignored"
    assert processor.media.objects == {}  # type: ignore[attr-defined]
    assert processor.mailer.sent == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("time_left_s, expected", [(None, 780), (900, 780), (400, 310), (60, 30)])
def test_ffmpeg_stops_in_time_to_record_the_outcome(
    processor: UploadProcessor, time_left_s: float | None, expected: float
) -> None:
    processor.process(uploaded(processor).upload_key, final_attempt=False, time_left_s=time_left_s)
    assert processor.transcoder.timeouts == [expected]  # type: ignore[attr-defined]


def test_only_one_of_two_racing_deliveries_sends_the_email(processor: UploadProcessor) -> None:
    video = uploaded(processor)
    processor.process(video.upload_key, final_attempt=False)
    stale = current(processor, video).with_changes(notified_at=None)  # what a racing reader saw
    processor._notify_once(stale)
    assert len(processor.mailer.sent) == 1  # type: ignore[attr-defined]


def test_unknown_keys_and_deleted_videos_are_ignored(processor: UploadProcessor) -> None:
    assert processor.process("somewhere/else", final_attempt=False) == "ignored"
    video = uploaded(processor)
    processor.videos.delete(video.owner_id, video.id)
    assert processor.process(video.upload_key, final_attempt=False) == "ignored"
    assert processor.mailer.sent == []  # type: ignore[attr-defined]
    assert processor.uploads.objects == {}  # type: ignore[attr-defined]  # the orphaned upload is gone


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
