"""The scheduled jobs' rules on fakes: abandoned uploads and stuck jobs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.bootstrap import Container
from chalicelib.domain import (
    UPLOAD_EXPIRED_REASON,
    NewVideo,
    Outputs,
    Principal,
    Rendition,
    SourceInfo,
    Video,
    VideoStatus,
    new_video_id,
    utcnow,
)
from chalicelib.housekeeping import STUCK_REASON, Housekeeping
from chalicelib.settings import Settings
from tests.fakes import FakePorts

UPLOAD_TTL_S = 300
STUCK_AFTER_S = 1200


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        work_dir=str(tmp_path),
        upload_url_ttl_s=UPLOAD_TTL_S,
        stuck_job_after_s=STUCK_AFTER_S,
        app_url="https://app.example",
    )


@pytest.fixture
def fakes() -> FakePorts:
    return FakePorts()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(fakes: FakePorts, settings: Settings, clock: Clock) -> Housekeeping:
    """The service the scheduled handlers call, wired by the composition root on fakes."""
    return replace(fakes.container(settings).housekeeping, clock=clock)


def stored_video(
    fakes: FakePorts, *, age_s: float, status: VideoStatus, size_bytes: int = 1000, **changes: Any
) -> Video:
    """A video created (and last updated) `age_s` ago."""
    at = utcnow() - timedelta(seconds=age_s)
    video = Video(
        id=new_video_id(int(at.timestamp() * 1000)),
        owner_id="owner-1",
        owner_email="owner@example.com",
        title="Trip",
        status=status,
        progress=0,
        created_at=at,
        updated_at=at,
        source=SourceInfo(filename="trip.mp4", size_bytes=size_bytes, content_type="video/mp4"),
        upload_etag=None if status is VideoStatus.AWAITING_UPLOAD else "etag-1",
    ).with_changes(**changes)
    fakes.videos.add(video)
    return video


def current(fakes: FakePorts, video: Video) -> Video:
    found = fakes.videos.get(video.owner_id, video.id)
    assert found is not None
    return found


# abandoned-uploads


def test_an_upload_window_that_passed_fails_the_video_removes_its_leftovers_and_emails_once(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    expired = stored_video(fakes, age_s=UPLOAD_TTL_S + 200, status=VideoStatus.AWAITING_UPLOAD)
    fakes.uploads.objects[f"{expired.upload_prefix}stray"] = (b"half", "video/mp4")
    fakes.uploads.multipart_uploads[(expired.upload_key, "upload-1")] = {1: b"part"}
    other = f"uploads/someone-else/{new_video_id()}/source"
    fakes.uploads.objects[other] = (b"theirs", "video/mp4")

    report = jobs.abandon_expired_uploads()

    failed = current(fakes, expired)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, UPLOAD_EXPIRED_REASON)
    assert list(fakes.uploads.objects) == [other]
    assert fakes.uploads.multipart_uploads == {}
    assert [m["to"] for m in fakes.mailer.sent] == ["owner@example.com"]
    assert (report.looked_at, report.changed, report.failed, report.errors) == (1, 1, 1, 0)


def test_a_video_still_in_its_upload_window_is_left_waiting(fakes: FakePorts, jobs: Housekeeping) -> None:
    waiting = stored_video(fakes, age_s=UPLOAD_TTL_S + 60, status=VideoStatus.AWAITING_UPLOAD)
    # A big file begun just before its link expired still has time to arrive at 1 Mbit/s.
    big = stored_video(fakes, age_s=3 * 3600, status=VideoStatus.AWAITING_UPLOAD, size_bytes=2 * 1024**3)

    report = jobs.abandon_expired_uploads()

    assert current(fakes, waiting).status is VideoStatus.AWAITING_UPLOAD
    assert current(fakes, big).status is VideoStatus.AWAITING_UPLOAD
    assert report.changed == 0 and fakes.mailer.sent == []
    assert report.looked_at == 1  # only the big one is old enough to look at


def test_running_abandoned_uploads_twice_changes_and_emails_once(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    stored_video(fakes, age_s=UPLOAD_TTL_S + 200, status=VideoStatus.AWAITING_UPLOAD)

    first, second = jobs.abandon_expired_uploads(), jobs.abandon_expired_uploads()

    assert (first.changed, second.looked_at, second.changed) == (1, 0, 0)
    assert len(fakes.mailer.sent) == 1


def test_an_upload_claimed_after_the_index_was_read_is_not_failed_nor_deleted(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    late = stored_video(fakes, age_s=UPLOAD_TTL_S + 200, status=VideoStatus.AWAITING_UPLOAD)
    fakes.uploads.objects[late.upload_key] = (b"the file", "video/mp4")
    listed = list(fakes.videos.list_idle(VideoStatus.AWAITING_UPLOAD, utcnow()))
    # The worker claims it between the job's query and its update.
    fakes.videos.update(late, expected={VideoStatus.AWAITING_UPLOAD}, status=VideoStatus.QUEUED)
    fakes.videos.list_idle = lambda status, updated_before: iter(listed)  # type: ignore[method-assign]

    report = jobs.abandon_expired_uploads()

    assert current(fakes, late).status is VideoStatus.QUEUED
    assert late.upload_key in fakes.uploads.objects
    assert (report.looked_at, report.changed, report.errors) == (1, 0, 0)
    assert fakes.mailer.sent == []


def test_one_bad_video_does_not_stop_the_run(fakes: FakePorts, jobs: Housekeeping) -> None:
    first = stored_video(fakes, age_s=UPLOAD_TTL_S + 400, status=VideoStatus.AWAITING_UPLOAD)
    second = stored_video(fakes, age_s=UPLOAD_TTL_S + 300, status=VideoStatus.AWAITING_UPLOAD)
    real_delete = fakes.uploads.delete_prefix

    def delete_prefix(prefix: str) -> None:
        if prefix == first.upload_prefix:
            raise ConnectionError("storage unreachable")
        real_delete(prefix)

    fakes.uploads.delete_prefix = delete_prefix  # type: ignore[method-assign]

    report = jobs.abandon_expired_uploads()

    assert current(fakes, second).status is VideoStatus.FAILED
    assert (report.looked_at, report.errors) == (2, 1)
    assert len(fakes.mailer.sent) == 2


# stuck-jobs


def test_a_stuck_job_is_requeued_once_then_failed_with_one_email(
    fakes: FakePorts, jobs: Housekeeping, clock: Clock, settings: Settings
) -> None:
    stuck = stored_video(fakes, age_s=STUCK_AFTER_S + 10, status=VideoStatus.PROCESSING, progress=40)

    first = jobs.rescue_stuck_jobs()

    assert fakes.jobs.requeued == [(settings.uploads_bucket, stuck.upload_key, "etag-1")]
    requeued = current(fakes, stuck)
    assert requeued.status is VideoStatus.PROCESSING and requeued.requeued_at == clock.now
    assert (first.looked_at, first.requeued, first.failed) == (1, 1, 0)
    # Recording the requeue counts as activity: not stuck again until another timeout.
    assert jobs.rescue_stuck_jobs().looked_at == 0

    clock.advance(STUCK_AFTER_S + 10)
    third = jobs.rescue_stuck_jobs()

    failed = current(fakes, stuck)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, STUCK_REASON)
    assert len(fakes.jobs.requeued) == 1
    assert [m["to"] for m in fakes.mailer.sent] == ["owner@example.com"]
    assert (third.looked_at, third.requeued, third.failed) == (1, 0, 1)
    clock.advance(STUCK_AFTER_S + 10)
    assert jobs.rescue_stuck_jobs().looked_at == 0
    assert len(fakes.mailer.sent) == 1


def test_a_queued_job_that_never_started_is_stuck_too(fakes: FakePorts, jobs: Housekeeping) -> None:
    stuck = stored_video(fakes, age_s=STUCK_AFTER_S + 10, status=VideoStatus.QUEUED)

    assert jobs.rescue_stuck_jobs().requeued == 1
    assert [key for _, key, _ in fakes.jobs.requeued] == [stuck.upload_key]


def test_a_queued_video_behind_a_backlog_is_not_failed_until_the_queue_drains(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    requeued = utcnow() - timedelta(seconds=STUCK_AFTER_S + 10)
    waiting = stored_video(fakes, age_s=STUCK_AFTER_S + 10, status=VideoStatus.QUEUED, requeued_at=requeued)
    fakes.jobs.waiting = 40

    report = jobs.rescue_stuck_jobs()

    assert (report.looked_at, report.changed, report.failed) == (1, 0, 0)
    assert current(fakes, waiting).status is VideoStatus.QUEUED and fakes.mailer.sent == []
    fakes.jobs.waiting = 0
    assert jobs.rescue_stuck_jobs().failed == 1
    assert current(fakes, waiting).status is VideoStatus.FAILED


def test_a_job_with_recent_progress_is_left_alone(fakes: FakePorts, jobs: Housekeeping) -> None:
    stored_video(fakes, age_s=STUCK_AFTER_S - 60, status=VideoStatus.PROCESSING)
    stored_video(fakes, age_s=STUCK_AFTER_S + 60, status=VideoStatus.READY)

    report = jobs.rescue_stuck_jobs()

    assert (report.looked_at, report.changed) == (0, 0)
    assert fakes.jobs.requeued == []


def test_two_runs_that_read_the_same_stuck_video_requeue_it_once(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    stuck = stored_video(fakes, age_s=STUCK_AFTER_S + 10, status=VideoStatus.PROCESSING)
    listed = list(fakes.videos.list_idle(VideoStatus.PROCESSING, utcnow()))
    jobs.rescue_stuck_jobs()
    # A concurrent run that read the index before the first one's update.
    fakes.videos.list_idle = lambda status, updated_before: iter(  # type: ignore[method-assign]
        listed if status is VideoStatus.PROCESSING else []
    )

    late = jobs.rescue_stuck_jobs()

    assert len(fakes.jobs.requeued) == 1
    assert current(fakes, stuck).status is VideoStatus.PROCESSING
    assert (late.looked_at, late.changed, late.errors) == (1, 0, 0)


def test_a_requeue_that_could_not_be_sent_is_tried_again_next_run(
    fakes: FakePorts, jobs: Housekeeping, clock: Clock
) -> None:
    stuck = stored_video(fakes, age_s=STUCK_AFTER_S + 10, status=VideoStatus.PROCESSING)
    fakes.jobs.broken = ConnectionError("queue unreachable")

    failed_run = jobs.rescue_stuck_jobs()

    assert (failed_run.errors, failed_run.requeued) == (1, 0)
    assert current(fakes, stuck).requeued_at is None
    fakes.jobs.broken = None
    # The take-back bumped updated_at; the job is found again once idle long enough.
    clock.advance(STUCK_AFTER_S + 10)
    assert jobs.rescue_stuck_jobs().requeued == 1
    assert current(fakes, stuck).status is VideoStatus.PROCESSING


def test_failing_a_stuck_video_that_was_left_playable_takes_its_partial_stream_back(
    fakes: FakePorts, jobs: Housekeeping, clock: Clock
) -> None:
    hls = Outputs(renditions=(), thumbnail_key=None, hls_master_key="media/owner-1/v/run1/hls/master.m3u8")
    stuck = stored_video(
        fakes,
        age_s=STUCK_AFTER_S + 10,
        status=VideoStatus.PROCESSING,
        playable=True,
        outputs=hls,
        requeued_at=utcnow() - timedelta(seconds=2 * STUCK_AFTER_S),
    )
    fakes.media.objects["media/owner-1/v/run1/hls/master.m3u8"] = (
        b"#EXTM3U",
        "application/vnd.apple.mpegurl",
    )

    jobs.rescue_stuck_jobs()

    failed = current(fakes, stuck)
    assert (failed.status, failed.playable, failed.outputs) == (VideoStatus.FAILED, False, None)
    assert fakes.media.objects == {}
    assert fakes.jobs.requeued == []


def test_a_stuck_video_that_finishes_meanwhile_is_not_failed(fakes: FakePorts, jobs: Housekeeping) -> None:
    stuck = stored_video(
        fakes,
        age_s=STUCK_AFTER_S + 10,
        status=VideoStatus.PROCESSING,
        requeued_at=utcnow() - timedelta(seconds=2 * STUCK_AFTER_S),
    )
    listed = list(fakes.videos.list_idle(VideoStatus.PROCESSING, utcnow()))
    mp4 = Rendition("720p", 1280, 720, "media/owner-1/v/run/720p.mp4")
    fakes.videos.update(stuck, status=VideoStatus.READY, outputs=Outputs((mp4,), None))
    fakes.videos.list_idle = lambda status, updated_before: iter(  # type: ignore[method-assign]
        listed if status is VideoStatus.PROCESSING else []
    )

    report = jobs.rescue_stuck_jobs()

    assert current(fakes, stuck).status is VideoStatus.READY
    assert (report.changed, report.errors) == (0, 0)
    assert fakes.mailer.sent == []


def test_the_job_report_names_the_job(jobs: Housekeeping) -> None:
    assert jobs.rescue_stuck_jobs().as_dict() == {
        "job": "stuck-jobs",
        "looked_at": 0,
        "changed": 0,
        "failed": 0,
        "requeued": 0,
        "errors": 0,
    }


def test_the_jobs_need_no_ffmpeg(fakes: FakePorts, tmp_path: Path) -> None:
    # A scheduled function's Lambda has no ffmpeg layer: the jobs never look for one.
    settings = Settings(work_dir=str(tmp_path), ffmpeg_path=str(tmp_path / "no-ffmpeg"), stuck_job_after_s=1)
    container = Container(
        settings,
        videos=fakes.videos,
        uploads=fakes.uploads,
        media=fakes.media,
        mailer=fakes.mailer,
        jobs=fakes.jobs,
    )
    stuck = stored_video(fakes, age_s=60, status=VideoStatus.PROCESSING, requeued_at=utcnow())

    assert container.housekeeping.rescue_stuck_jobs().failed == 1
    assert current(fakes, stuck).status is VideoStatus.FAILED


def test_a_big_upload_is_given_up_once_even_a_slow_link_would_have_sent_it(
    fakes: FakePorts, jobs: Housekeeping
) -> None:
    # 2 GiB at 1 Mbit/s is about 4.8 hours after the link's lifetime.
    big = stored_video(fakes, age_s=5 * 3600, status=VideoStatus.AWAITING_UPLOAD, size_bytes=2 * 1024**3)

    assert jobs.abandon_expired_uploads().failed == 1
    assert current(fakes, big).status is VideoStatus.FAILED


def test_an_abandoned_upload_gives_its_reserved_bytes_back_once(
    fakes: FakePorts, settings: Settings, jobs: Housekeeping, clock: Clock
) -> None:
    container = fakes.container(settings)
    owner = Principal(user_id="owner", email="owner@example.com")
    video, _ = container.video_service.create(owner, NewVideo("Trip", "trip.mp4", "video/mp4", 5_000))
    today = video.created_at.date()
    assert fakes.usage.quota_usage("owner", today).bytes_stored == 5_000

    clock.advance(UPLOAD_TTL_S + 1_000)
    jobs.abandon_expired_uploads()

    failed = current(fakes, video)
    assert failed.status is VideoStatus.FAILED and failed.source.size_bytes == 0
    assert fakes.usage.quota_usage("owner", today).bytes_stored == 0
    # Deleting it afterwards frees nothing more: the level never goes below zero.
    container.video_service.delete(owner, video.id)
    assert fakes.usage.quota_usage("owner", today).bytes_stored == 0
