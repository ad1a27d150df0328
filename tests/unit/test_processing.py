"""The worker's use case with in-memory fakes: states, emails, retries."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain import (
    Outputs,
    Principal,
    Rendition,
    SourceInfo,
    Video,
    VideoStatus,
    media_prefix,
    new_video_id,
    utcnow,
)
from chalicelib.ports import IMMUTABLE, MediaInfo, MediaProcessingError, MediaRejected, MediaSource
from chalicelib.processing import (
    GAVE_UP_REASON,
    JOB_DIR_PREFIX,
    JOB_LOCK_NAME,
    SOURCE_URL_MARGIN_S,
    UPLOAD_REPLACED_REASON,
    JobInterrupted,
    UploadedObject,
    UploadProcessor,
    job_dir,
    remove_abandoned_job_dirs,
    uploaded_objects,
)
from chalicelib.settings import Settings
from tests.fakes import FakeBlobStore, FakePorts, FakeVideoRepository

OWNER = Principal(user_id="owner-1", email="owner@example.com")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    work = tmp_path / "work"
    work.mkdir()
    return Settings(work_dir=str(work), max_duration_s=60, app_url="https://app.example")


@pytest.fixture
def fakes() -> FakePorts:
    return FakePorts()


@pytest.fixture
def processor(fakes: FakePorts, settings: Settings) -> UploadProcessor:
    """The worker's processor, wired by the composition root on fakes."""
    return fakes.container(settings).processor


def new_video(fakes: FakePorts, video_id: str | None = None) -> Video:
    now = utcnow()
    video = Video(
        id=video_id or new_video_id(),
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
    return video


def upload(
    fakes: FakePorts, video: Video, data: bytes = b"video bytes", content_type: str = "video/mp4"
) -> UploadedObject:
    """Store a file under the video's upload key; the S3 event that says so."""
    fakes.uploads.objects[video.upload_key] = (data, content_type)
    return UploadedObject(bucket="uploads", key=video.upload_key, etag=hashlib.md5(data).hexdigest())


def uploaded(
    fakes: FakePorts,
    data: bytes = b"video bytes",
    content_type: str = "video/mp4",
    *,
    video_id: str | None = None,
) -> tuple[Video, UploadedObject]:
    video = new_video(fakes, video_id)
    return video, upload(fakes, video, data, content_type)


def current(fakes: FakePorts, video: Video) -> Video:
    found = fakes.videos.get(video.owner_id, video.id)
    assert found is not None
    return found


def test_a_good_upload_becomes_ready_and_the_owner_gets_one_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    assert processor.process(event, final_attempt=False) == "ready"
    done = current(fakes, video)
    assert done.status is VideoStatus.READY and done.progress == 100
    assert done.source.duration_s == 4.0 and done.source.size_bytes == len(b"video bytes")
    assert done.upload_etag == event.etag
    assert done.playable
    outputs = done.outputs
    assert outputs and outputs.renditions[0].name == "720p"
    assert [rung.name for rung in outputs.rungs] == ["1080p", "720p", "480p", "360p"]
    assert outputs.hls_master_key and outputs.hls_master_key.endswith("/hls/master.m3u8")
    run_prefix = outputs.hls_master_key.removesuffix("hls/master.m3u8")
    assert {outputs.renditions[0].key, outputs.thumbnail_key, outputs.hls_master_key} <= set(
        fakes.media.objects
    )
    assert f"{run_prefix}hls/360p/seg00001.m4s" in fakes.media.objects
    assert fakes.media.cache_control[f"{run_prefix}hls/360p/index.m3u8"] == IMMUTABLE
    assert all(key.startswith(run_prefix) for key in fakes.media.objects)
    mails = fakes.mailer.sent
    assert len(mails) == 1 and mails[0]["to"] == OWNER.email
    assert f"https://app.example/?video={video.id}" in mails[0]["text"]


def test_the_source_is_read_through_a_presigned_get_of_the_claimed_upload(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    processor.process(event, final_attempt=False)

    assert fakes.uploads.presigned_downloads == [
        {"key": video.upload_key, "if_match": event.etag, "expires_s": 780 + SOURCE_URL_MARGIN_S}
    ]
    # Probe and transcode read the same URL, which only serves the claimed bytes.
    probed, transcoded = fakes.transcoder.sources
    assert probed == transcoded and ("If-Match", f'"{event.etag}"') in probed.headers


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def quick(processor: UploadProcessor) -> UploadProcessor:
    """The processor, publishing segments every 10 ms."""
    processor.publish_poll_s = 0.01
    return processor


def test_the_video_is_playable_while_processing_once_every_rung_has_a_segment(
    quick: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    seen: list[Video] = []

    def when_ffmpeg_wrote_the_first_segments() -> None:
        wait_until(lambda: current(fakes, video).playable)
        seen.append(current(fakes, video))

    fakes.transcoder.after_first_segments = when_ffmpeg_wrote_the_first_segments
    assert quick.process(event, final_attempt=False) == "ready"

    playable = seen[0]
    assert playable.status is VideoStatus.PROCESSING and playable.outputs is not None
    outputs = playable.outputs
    assert outputs.renditions == () and outputs.thumbnail_key is None
    assert [rung.name for rung in outputs.rungs] == ["1080p", "720p", "480p", "360p"]
    assert outputs.hls_master_key is not None and outputs.hls_master_key in fakes.media.objects
    done = current(fakes, video)
    assert done.playable and done.outputs is not None
    assert done.outputs.hls_master_key == outputs.hls_master_key
    assert done.outputs.rungs == outputs.rungs


@pytest.mark.parametrize(
    "error, final_attempt, status",
    [
        (MediaProcessingError("the source read broke"), False, VideoStatus.PROCESSING),
        (MediaProcessingError("the source read broke"), True, VideoStatus.FAILED),
        (MediaRejected("The video stream is broken after 2 seconds."), False, VideoStatus.FAILED),
    ],
)
def test_a_failure_after_the_video_became_playable_takes_the_run_back(
    quick: UploadProcessor,
    fakes: FakePorts,
    error: Exception,
    final_attempt: bool,
    status: VideoStatus,
) -> None:
    video, event = uploaded(fakes)
    fakes.media.objects["media/owner-1/another-video/720p.mp4"] = (b"keep", "video/mp4")

    def fail_once_playable() -> None:
        wait_until(lambda: current(fakes, video).playable)
        raise error

    fakes.transcoder.after_first_segments = fail_once_playable
    if status is VideoStatus.PROCESSING:
        with pytest.raises(MediaProcessingError):
            quick.process(event, final_attempt=final_attempt)
    else:
        with contextlib.suppress(MediaProcessingError):
            quick.process(event, final_attempt=final_attempt)

    after = current(fakes, video)
    assert after.status is status and not after.playable and after.outputs is None
    assert list(fakes.media.objects) == ["media/owner-1/another-video/720p.mp4"]
    assert len(fakes.mailer.sent) == (0 if status is VideoStatus.PROCESSING else 1)


def test_the_retry_of_a_run_that_was_playable_publishes_a_new_run(
    quick: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    masters: list[str] = []

    def fail_once_playable() -> None:
        wait_until(lambda: current(fakes, video).playable)
        outputs = current(fakes, video).outputs
        assert outputs is not None and outputs.hls_master_key
        masters.append(outputs.hls_master_key)
        raise MediaProcessingError("the source read broke")

    fakes.transcoder.after_first_segments = fail_once_playable
    with pytest.raises(MediaProcessingError):
        quick.process(event, final_attempt=False)
    fakes.transcoder.after_first_segments = None
    assert quick.process(event, final_attempt=False) == "ready"

    done = current(fakes, video)
    assert done.playable and done.outputs is not None
    assert done.outputs.hls_master_key not in masters
    assert masters[0] not in fakes.media.objects


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
    fakes.container(settings).processor.process(uploaded(fakes)[1], final_attempt=False)
    progress = [p for p in videos.progress if 0 < p < 100]
    assert progress == sorted(progress) and len(set(progress)) >= 3


def test_a_second_delivery_does_nothing_more(processor: UploadProcessor, fakes: FakePorts) -> None:
    _, event = uploaded(fakes)
    processor.process(event, final_attempt=False)
    assert processor.process(event, final_attempt=False) == "duplicate"
    assert fakes.transcoder.encodes == 1
    assert len(fakes.mailer.sent) == 1


def test_an_email_that_failed_to_send_is_sent_on_the_retry(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.mailer.failures_left = 1
    video, event = uploaded(fakes)
    with pytest.raises(ConnectionError):
        processor.process(event, final_attempt=False)
    assert current(fakes, video).status is VideoStatus.READY
    assert processor.process(event, final_attempt=False) == "duplicate"
    assert len(fakes.mailer.sent) == 1
    assert fakes.transcoder.encodes == 1


def test_rejected_media_fails_the_video_with_the_reason(processor: UploadProcessor, fakes: FakePorts) -> None:
    fakes.transcoder.reject_probe = "This file has no video, only audio."
    video, event = uploaded(fakes)
    assert processor.process(event, final_attempt=False) == "failed"
    failed = current(fakes, video)
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
    video, event = uploaded(fakes, data, content_type)
    processor.process(event, final_attempt=False)
    failed = current(fakes, video)
    assert failed.status is VideoStatus.FAILED and failed.error and words in failed.error
    assert fakes.transcoder.encodes == 0


def test_a_video_whose_header_says_it_is_too_long_is_rejected_before_encoding(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.info = MediaInfo(
        duration_s=61, width=640, height=360, video_codec="h264", audio_codec=None, rotation=0
    )
    video, event = uploaded(fakes)
    processor.process(event, final_attempt=False)
    failed = current(fakes, video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error == "This video is longer than the 1 minute allowed."
    assert fakes.transcoder.encodes == 0


# --- transient and permanent failures ---


@pytest.mark.parametrize("final_attempt", [False, True])
def test_a_file_found_bad_while_encoding_fails_at_once_with_its_own_reason(
    processor: UploadProcessor, fakes: FakePorts, final_attempt: bool
) -> None:
    reason = "This video is longer than the 1 minute allowed."
    fakes.transcoder.encode_error = MediaRejected(reason)
    video, event = uploaded(fakes)

    assert processor.process(event, final_attempt=final_attempt) == "failed"  # returns: never retried

    failed = current(fakes, video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, reason)
    assert len(fakes.mailer.sent) == 1 and reason in fakes.mailer.sent[0]["text"]
    assert fakes.transcoder.encodes == 1


@pytest.mark.parametrize(
    "error", [MediaProcessingError("ffmpeg was killed by SIGKILL"), OSError("disk full"), ConnectionError()]
)
def test_a_transient_error_is_retried_and_the_last_attempt_fails_the_video(
    processor: UploadProcessor, fakes: FakePorts, error: Exception
) -> None:
    fakes.transcoder.encode_error = error
    video, event = uploaded(fakes)
    with pytest.raises(type(error)):
        processor.process(event, final_attempt=False)
    assert current(fakes, video).status is VideoStatus.PROCESSING
    assert fakes.mailer.sent == []
    with pytest.raises(type(error)):
        processor.process(event, final_attempt=True)
    failed = current(fakes, video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, GAVE_UP_REASON)
    assert len(fakes.mailer.sent) == 1
    assert fakes.transcoder.encodes == 2


class UnreachableMedia(FakeBlobStore):
    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None:
        raise ConnectionError("media bucket unreachable")


def test_an_infrastructure_error_storing_the_outputs_is_retried(settings: Settings) -> None:
    fakes = FakePorts(media=UnreachableMedia())
    video, event = uploaded(fakes)
    with pytest.raises(ConnectionError):
        fakes.container(settings).processor.process(event, final_attempt=False)
    assert current(fakes, video).status is VideoStatus.PROCESSING


def test_an_interrupted_last_attempt_gives_its_message_back_untouched(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = JobInterrupted()
    video, event = uploaded(fakes)
    with pytest.raises(JobInterrupted):
        processor.process(event, final_attempt=True)
    left = current(fakes, video)
    assert left.status is VideoStatus.PROCESSING and left.error is None
    assert fakes.mailer.sent == [] and fakes.media.objects == {}

    fakes.transcoder.encode_error = None  # the message comes back after the restart
    assert processor.process(event, final_attempt=True) == "ready"
    assert len(fakes.mailer.sent) == 1


def test_a_header_that_understates_the_duration_records_the_true_one(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.decoded_duration_s = 20.0  # the header said 4 s; the limit is 60 s
    video, event = uploaded(fakes)
    assert processor.process(event, final_attempt=False) == "ready"
    assert current(fakes, video).source.duration_s == 20.0


def test_the_limits_that_hold_while_decoding_come_from_the_settings(
    processor: UploadProcessor, fakes: FakePorts, settings: Settings
) -> None:
    processor.process(uploaded(fakes)[1], final_attempt=False)
    other = settings.model_copy(update={"max_duration_s": 90, "max_frame_pixels": 1000})
    fakes.container(other).processor.process(uploaded(fakes)[1], final_attempt=False)
    assert fakes.transcoder.limits == [(60, 4096 * 4096), (90, 1000)]


# --- one upload per ticket ---


def test_a_second_upload_during_an_encode_is_refused_and_the_first_finishes(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, first = uploaded(fakes, b"first upload")
    outcomes = []

    def second_upload_lands() -> None:
        second = upload(fakes, video, b"second upload")
        outcomes.append(processor.process(second, final_attempt=False))

    fakes.transcoder.during_encode = second_upload_lands
    assert processor.process(first, final_attempt=False) == "ready"

    assert outcomes == ["refused"]
    done = current(fakes, video)
    assert done.status is VideoStatus.READY and done.upload_etag == first.etag
    assert done.outputs is not None
    rendition = fakes.media.objects[done.outputs.renditions[0].key][0]
    assert rendition == b"first upload"
    assert done.outputs.thumbnail_key in fakes.media.objects
    assert len(fakes.mailer.sent) == 1 and fakes.transcoder.encodes == 1


def test_a_second_upload_whose_event_names_no_etag_does_not_fail_the_first(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, first = uploaded(fakes, b"first upload")
    outcomes = []

    def second_upload_lands() -> None:
        second = upload(fakes, video, b"second upload")
        outcomes.append(processor.process(dataclasses.replace(second, etag=""), final_attempt=False))

    fakes.transcoder.during_encode = second_upload_lands
    assert processor.process(first, final_attempt=False) == "ready"

    assert outcomes == ["refused"]
    assert current(fakes, video).status is VideoStatus.READY and len(fakes.mailer.sent) == 1


def test_another_upload_after_the_video_is_final_is_refused(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, first = uploaded(fakes)
    processor.process(first, final_attempt=False)
    before, stored = current(fakes, video), dict(fakes.media.objects)
    assert processor.process(upload(fakes, video, b"again"), final_attempt=False) == "refused"
    assert current(fakes, video) == before
    assert fakes.media.objects == stored and len(fakes.mailer.sent) == 1


def test_an_upload_replaced_before_any_job_claimed_it_leaves_the_video_to_the_newer_one(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, first = uploaded(fakes, b"first upload")
    second = upload(fakes, video, b"second upload")

    assert processor.process(first, final_attempt=False) == "refused"
    assert current(fakes, video).status is VideoStatus.AWAITING_UPLOAD
    assert processor.process(second, final_attempt=False) == "ready"
    assert current(fakes, video).upload_etag == second.etag
    assert fakes.transcoder.encodes == 1


class ClaimedMeanwhile(FakeVideoRepository):
    """Another job claims the video for `etag` just before this job's claim."""

    def __init__(self, etag: str) -> None:
        super().__init__()
        self.etag = etag

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        if "upload_etag" in changes and self.etag:
            super().update(video, status=VideoStatus.QUEUED, upload_etag=self.etag)
            self.etag = ""
        return super().update(video, expected=expected, **changes)


def test_a_job_that_loses_the_claim_to_another_upload_leaves_the_video_to_it(settings: Settings) -> None:
    fakes = FakePorts(videos=ClaimedMeanwhile("the-other-upload"))
    video, event = uploaded(fakes)
    assert fakes.container(settings).processor.process(event, final_attempt=False) == "refused"
    assert current(fakes, video).upload_etag == "the-other-upload"
    assert fakes.transcoder.encodes == 0


def test_a_job_that_loses_the_claim_to_the_same_upload_carries_on(settings: Settings) -> None:
    fakes = FakePorts(videos=ClaimedMeanwhile(hashlib.md5(b"video bytes").hexdigest()))
    video, event = uploaded(fakes)
    assert fakes.container(settings).processor.process(event, final_attempt=False) == "ready"
    assert current(fakes, video).upload_etag == event.etag


def test_a_video_claimed_before_etags_were_recorded_is_claimed_by_its_retry(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    fakes.videos.update(video, status=VideoStatus.PROCESSING, progress=40)  # in flight across a deploy
    assert processor.process(event, final_attempt=False) == "ready"
    assert current(fakes, video).upload_etag == event.etag


class ReplacedBeforeRead(FakeBlobStore):
    """Another upload lands on the key just before the job reads it."""

    def presign_download(self, key: str, *, if_match: str | None, expires_s: int) -> MediaSource:
        self.objects[key] = (b"second upload", "video/mp4")
        return super().presign_download(key, if_match=if_match, expires_s=expires_s)


def test_a_claimed_upload_replaced_before_the_job_read_it_fails_the_video(settings: Settings) -> None:
    fakes = FakePorts(uploads=ReplacedBeforeRead())
    video, first = uploaded(fakes, b"first upload")

    assert fakes.container(settings).processor.process(first, final_attempt=False) == "failed"

    failed = current(fakes, video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, UPLOAD_REPLACED_REASON)
    assert failed.upload_etag == first.etag
    assert fakes.transcoder.encodes == 0 and len(fakes.mailer.sent) == 1


def test_a_retry_whose_upload_was_replaced_meanwhile_fails_the_video(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = MediaProcessingError("ffmpeg was killed")
    video, first = uploaded(fakes, b"first upload")
    with pytest.raises(MediaProcessingError):
        processor.process(first, final_attempt=False)
    upload(fakes, video, b"second upload")
    fakes.transcoder.encode_error = None

    assert processor.process(first, final_attempt=False) == "failed"
    assert current(fakes, video).error == UPLOAD_REPLACED_REASON
    assert fakes.transcoder.encodes == 1


def test_the_same_upload_retried_after_a_failure_carries_on(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = MediaProcessingError("ffmpeg timed out")
    video, event = uploaded(fakes)
    with pytest.raises(MediaProcessingError):
        processor.process(event, final_attempt=False)
    fakes.transcoder.encode_error = None
    assert processor.process(event, final_attempt=False) == "ready"
    assert current(fakes, video).upload_etag == event.etag


class AnotherJobFinishesFirst(FakeVideoRepository):
    """Just before a job records its outputs, another job of the same video
    records its own (`winner`, stored in `media`)."""

    def __init__(self, media: FakeBlobStore, winner: Outputs) -> None:
        super().__init__()
        self.media, self.winner = media, winner

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        if changes.get("status") is VideoStatus.READY and changes.get("outputs") != self.winner:
            for key in (self.winner.renditions[0].key, self.winner.thumbnail_key):
                self.media.objects[key] = (b"the winner's", "video/mp4")
            super().update(video, status=VideoStatus.READY, outputs=self.winner)
        return super().update(video, expected=expected, **changes)


def test_a_job_that_loses_its_video_to_another_removes_only_what_it_wrote(settings: Settings) -> None:
    media = FakeBlobStore()
    prefix = media_prefix(OWNER.user_id, "v")
    winner = Outputs(
        renditions=(Rendition("720p", 1280, 720, f"{prefix}winner/720p.mp4"),),
        thumbnail_key=f"{prefix}winner/thumbnail.jpg",
    )
    fakes = FakePorts(videos=AnotherJobFinishesFirst(media, winner), media=media)
    video, event = uploaded(fakes, video_id="v")

    assert fakes.container(settings).processor.process(event, final_attempt=False) == "stale"

    assert current(fakes, video).outputs == winner
    assert set(media.objects) == {winner.renditions[0].key, winner.thumbnail_key}
    assert fakes.mailer.sent == []  # the winner's job tells the owner


def test_a_video_deleted_while_encoding_leaves_no_outputs_and_no_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    fakes.transcoder.during_encode = lambda: fakes.videos.delete(video.owner_id, video.id)
    fakes.media.objects["media/owner-1/another-video/720p.mp4"] = (b"keep", "video/mp4")
    assert processor.process(event, final_attempt=False) == "ignored"
    assert list(fakes.media.objects) == ["media/owner-1/another-video/720p.mp4"]
    assert fakes.mailer.sent == []


class DeletedWhileStoring(FakeBlobStore):
    """The video is deleted (by its owner) right after each object is stored."""

    def __init__(self, videos: FakeVideoRepository) -> None:
        super().__init__()
        self.videos = videos

    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None:
        super().upload(path, key, content_type, cache_control=cache_control)
        for owner_id, video_id in list(self.videos.videos):
            self.videos.delete(owner_id, video_id)


def test_a_video_deleted_while_its_outputs_were_stored_loses_them(settings: Settings) -> None:
    videos = FakeVideoRepository()
    fakes = FakePorts(videos=videos, media=DeletedWhileStoring(videos))
    _, event = uploaded(fakes)
    assert fakes.container(settings).processor.process(event, final_attempt=False) == "ignored"
    assert fakes.media.objects == {}


class ReadyAnswerLost(FakeVideoRepository):
    """Records READY but answers with an error, as a lost DynamoDB response would."""

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        updated = super().update(video, expected=expected, **changes)
        if changes.get("status") is VideoStatus.READY:
            raise ConnectionError("the update was applied, its answer lost")
        return updated


def test_outputs_the_video_recorded_are_kept_when_the_answer_was_lost(settings: Settings) -> None:
    fakes = FakePorts(videos=ReadyAnswerLost())
    video, event = uploaded(fakes)
    with pytest.raises(ConnectionError):
        fakes.container(settings).processor.process(event, final_attempt=False)
    done = current(fakes, video)
    assert done.status is VideoStatus.READY and done.outputs is not None
    assert {done.outputs.renditions[0].key, done.outputs.thumbnail_key} <= set(fakes.media.objects)
    assert done.outputs.hls_master_key in fakes.media.objects


# --- giving up (the dead-letter queue) ---


def test_giving_up_fails_a_video_left_processing_and_emails_once(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = MediaProcessingError("killed")
    video, event = uploaded(fakes)
    with pytest.raises(MediaProcessingError):
        processor.process(event, final_attempt=False)  # as if the worker then died

    assert processor.give_up(event) == "failed"
    assert processor.give_up(event) == "failed"  # redelivered

    failed = current(fakes, video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, GAVE_UP_REASON)
    (mail,) = fakes.mailer.sent
    assert GAVE_UP_REASON in mail["text"]


def left_playable_by_a_killed_run(fakes: FakePorts, video: Video, event: UploadedObject) -> str:
    """The video as a worker killed after it became playable leaves it: processing,
    playable, naming that run's HLS, whose objects are stored. Returns the run's prefix."""
    killed = f"{video.media_prefix}killed-run/"
    fakes.videos.update(
        video,
        status=VideoStatus.PROCESSING,
        upload_etag=event.etag,
        playable=True,
        outputs=Outputs(renditions=(), thumbnail_key=None, hls_master_key=f"{killed}hls/master.m3u8"),
    )
    for key in (f"{killed}hls/master.m3u8", f"{killed}hls/360p/seg00000.m4s"):
        fakes.media.objects[key] = (b"stored", "application/octet-stream")
    return killed


def test_giving_up_on_a_video_a_killed_run_left_playable_unpublishes_that_run(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    left_playable_by_a_killed_run(fakes, video, event)
    fakes.media.objects["media/owner-1/other/720p.mp4"] = (b"keep", "video/mp4")

    assert processor.give_up(event) == "failed"

    failed = current(fakes, video)
    assert failed.status is VideoStatus.FAILED and not failed.playable and failed.outputs is None
    assert list(fakes.media.objects) == ["media/owner-1/other/720p.mp4"]
    assert len(fakes.mailer.sent) == 1


def test_the_retry_after_a_killed_playable_run_takes_that_run_back_first(
    quick: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    killed = left_playable_by_a_killed_run(fakes, video, event)
    claimed: list[Video] = []
    fakes.transcoder.during_encode = lambda: claimed.append(current(fakes, video))

    assert quick.process(event, final_attempt=False) == "ready"

    assert not claimed[0].playable and claimed[0].outputs is None  # no longer names the dead run
    done = current(fakes, video)
    assert done.outputs is not None and done.outputs.hls_master_key is not None
    assert not any(key.startswith(killed) for key in fakes.media.objects)


def test_giving_up_leaves_a_final_video_as_it_is(processor: UploadProcessor, fakes: FakePorts) -> None:
    video, event = uploaded(fakes)
    processor.process(event, final_attempt=False)
    before = current(fakes, video)
    assert processor.give_up(event) == "ready"
    assert current(fakes, video) == before and len(fakes.mailer.sent) == 1


def test_giving_up_emails_the_owner_whose_last_attempt_could_not(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    fakes.transcoder.encode_error = MediaProcessingError("killed")
    fakes.mailer.failures_left = 1
    video, event = uploaded(fakes)
    with pytest.raises(ConnectionError):
        processor.process(event, final_attempt=True)
    assert current(fakes, video).status is VideoStatus.FAILED and fakes.mailer.sent == []
    assert processor.give_up(event) == "failed"
    assert len(fakes.mailer.sent) == 1


def test_giving_up_ignores_deleted_videos_other_keys_and_refused_uploads(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    assert processor.give_up(UploadedObject("uploads", "somewhere/else")) == "ignored"
    gone, event = uploaded(fakes)
    fakes.videos.delete(gone.owner_id, gone.id)
    assert processor.give_up(event) == "ignored"

    video, first = uploaded(fakes, b"first")
    processor.process(first, final_attempt=False)
    refused = upload(fakes, video, b"second")
    assert processor.give_up(refused) == "ignored"
    assert current(fakes, video).status is VideoStatus.READY
    assert len(fakes.mailer.sent) == 1


# --- scratch space ---


def job_dirs(processor: UploadProcessor) -> list[str]:
    return sorted(p for p in os.listdir(processor.settings.work_dir) if p.startswith(JOB_DIR_PREFIX))


def test_each_job_works_in_its_own_locked_directory_and_removes_it(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    during: list[list[str]] = []

    def look() -> None:
        during.append(job_dirs(processor))
        # A sweep meanwhile (another worker starting) must not take a live job's directory.
        assert remove_abandoned_job_dirs(processor.settings.work_dir) == []

    fakes.transcoder.during_encode = look
    processor.process(uploaded(fakes)[1], final_attempt=False)
    fakes.transcoder.encode_error = MediaProcessingError("killed")
    with pytest.raises(MediaProcessingError):
        processor.process(uploaded(fakes)[1], final_attempt=False)

    assert [len(names) for names in during] == [1, 1]
    assert job_dirs(processor) == []


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_the_first_job_removes_the_directories_a_crashed_worker_left(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    work = Path(processor.settings.work_dir)
    abandoned = work / f"{JOB_DIR_PREFIX}crashed"
    abandoned.mkdir()
    (abandoned / JOB_LOCK_NAME).touch()
    (abandoned / "source").write_bytes(b"x" * 1000)
    half_removed = work / f"{JOB_DIR_PREFIX}half-removed"  # its lock file went first
    half_removed.mkdir()
    live = work / f"{JOB_DIR_PREFIX}live"
    live.mkdir()
    (live / JOB_LOCK_NAME).touch()
    unrelated = work / "someone-else"
    unrelated.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(live / JOB_LOCK_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        processor.process(uploaded(fakes)[1], final_attempt=False)
        processor.process(uploaded(fakes)[1], final_attempt=False)
        assert not abandoned.exists() and not half_removed.exists()
        assert live.exists() and unrelated.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    # Once its holder is gone it is abandoned too.
    assert remove_abandoned_job_dirs(str(work)) == [str(live)]


def test_a_job_directory_is_removed_even_when_the_job_raises(tmp_path: Path) -> None:
    with pytest.raises(JobInterrupted), job_dir(str(tmp_path)) as path:
        Path(path, "source").write_bytes(b"x")
        raise JobInterrupted
    assert not Path(path).exists()


# --- timing, notification races, unknown keys, events ---


@pytest.mark.parametrize("time_left_s, expected", [(None, 780), (900, 780), (400, 310), (60, 30)])
def test_ffmpeg_stops_in_time_to_record_the_outcome(
    processor: UploadProcessor, fakes: FakePorts, time_left_s: float | None, expected: float
) -> None:
    processor.process(uploaded(fakes)[1], final_attempt=False, time_left_s=time_left_s)
    assert fakes.transcoder.timeouts == [expected]


def test_only_one_of_two_racing_deliveries_sends_the_email(
    processor: UploadProcessor, fakes: FakePorts
) -> None:
    video, event = uploaded(fakes)
    processor.process(event, final_attempt=False)
    stale = current(fakes, video).with_changes(notified_at=None)  # what a racing reader saw
    processor._notify_once(stale)
    assert len(fakes.mailer.sent) == 1


def test_unknown_keys_and_deleted_videos_are_ignored(processor: UploadProcessor, fakes: FakePorts) -> None:
    assert processor.process(UploadedObject("uploads", "somewhere/else"), final_attempt=False) == "ignored"
    video, event = uploaded(fakes)
    fakes.videos.delete(video.owner_id, video.id)
    assert processor.process(event, final_attempt=False) == "ignored"
    assert fakes.mailer.sent == []
    assert fakes.uploads.objects == {}  # the orphaned upload is gone


def test_a_stale_update_is_not_mistaken_for_a_deletion(processor: UploadProcessor, fakes: FakePorts) -> None:
    video, event = uploaded(fakes)

    def give_up_meanwhile() -> None:
        processor.give_up(event)

    fakes.transcoder.during_encode = give_up_meanwhile
    assert processor.process(event, final_attempt=False) == "stale"
    failed = current(fakes, video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, GAVE_UP_REASON)
    assert fakes.media.objects == {} and len(fakes.mailer.sent) == 1


def test_s3_messages_are_unpacked_and_test_events_skipped() -> None:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Post",
                    "s3": {
                        "bucket": {"name": "up"},
                        "object": {"key": "uploads/a/b/my+file%21", "eTag": "abc123", "sequencer": "0A1"},
                    },
                },
                {
                    "eventName": "ObjectRemoved:Delete",
                    "s3": {"bucket": {"name": "up"}, "object": {"key": "k"}},
                },
            ]
        }
    )
    assert uploaded_objects(body) == [UploadedObject("up", "uploads/a/b/my file!", "abc123")]
    assert UploadedObject.from_job(uploaded_objects(body)[0].as_job()) == uploaded_objects(body)[0]
    assert uploaded_objects(json.dumps({"Event": "s3:TestEvent"})) == []
    assert uploaded_objects("not json") == []
    assert uploaded_objects("[1]") == []
    assert uploaded_objects(json.dumps({"Records": ["x"]})) == []
