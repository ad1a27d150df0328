"""The scheduled jobs that keep videos honest: they finish what nothing else will.

`abandoned-uploads`: a video still `awaiting_upload` after its upload window
(`Video.upload_expired`: the presigned POST's lifetime, plus the time its
declared size takes at a slow 1 Mbit/s, plus a grace for the event) can no
longer receive its file. It becomes `failed` for real (a conditional update
from `awaiting_upload`, so an upload claimed meanwhile wins), whatever reached
the bucket under its upload prefix is deleted, unfinished multipart uploads
there are aborted, and the owner gets one email.

`stuck-jobs`: a video `queued` or `processing` with no progress (no update of
`updated_at`; the worker's progress reports bump it) for longer than
`stuck_job_after_s`, which is longer than any worker invocation can live, has
no live worker behind it: its job died where neither the retries nor the
dead-letter queue's handler saw it (a message lost or expired, a crash
between queues). Its upload goes back on the jobs queue once, recorded on
the video (`requeued_at`) with a condition on `updated_at`, so two runs
cannot both requeue it. If it is still stuck another `stuck_job_after_s`
later, it is failed with a reason for people and one email.

Both find candidates through the repository's index of open videos
(`VideoRepository.list_idle`), never by scanning the table, and act only
through conditional updates, so running a job twice, or two runs at once,
changes each video once. One video's error is logged and counted, and the
run goes on with the next.

Requeued jobs and idempotency. The worker runs each upload at most once per
(bucket, key, ETag) through Powertools idempotency, and a requeued job has
the same key as the original. It still runs: a record of a run that raised
is deleted, and the in-progress record of a run that died expires when its
invocation would have ended (at most the worker's Lambda timeout), which is
before `stuck_job_after_s` has passed. Only a run that *returned* while
leaving the video open (it found the video changed under it: "stale")
leaves a completed record that would turn the requeue away; then the video
stays stuck and is failed on the next pass, so it still ends final with one
email.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import telemetry
from chalicelib.domain import UPLOAD_EVENT_GRACE_S, UPLOAD_EXPIRED_REASON, Video, VideoStatus, utcnow
from chalicelib.ports import (
    BlobStore,
    JobQueue,
    MediaInfo,
    MediaSource,
    StaleUpdate,
    TranscodeResult,
    VideoRepository,
)
from chalicelib.processing import UploadProcessor
from chalicelib.settings import Settings
from chalicelib.telemetry import FailureReason

logger = logging.getLogger(__name__)

ABANDONED_UPLOADS = "abandoned-uploads"
STUCK_JOBS = "stuck-jobs"

STUCK_REASON = (
    "Processing this video stopped and did not resume, even after another try. Please upload it again."
)

# The states a job can be stuck in: queued (claimed, not started) and processing.
STUCK_STATES = (VideoStatus.QUEUED, VideoStatus.PROCESSING)


class NoTranscoder:
    """The transcoder of the processor the jobs fail videos through: they never
    encode, and their Lambdas have no ffmpeg."""

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        raise RuntimeError("the scheduled jobs do not probe media")

    def transcode(self, *args: Any, **kwargs: Any) -> TranscodeResult:
        raise RuntimeError("the scheduled jobs do not encode")


@dataclass
class JobReport:
    """What one run of a scheduled job did, for its log line and its caller."""

    job: str
    looked_at: int = 0  # candidates the index returned
    changed: int = 0  # videos the run changed (failed or requeued)
    failed: int = 0
    requeued: int = 0
    errors: int = 0  # videos the run could not handle; the next run tries again

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Housekeeping:
    """The scheduled jobs' service functions, on the ports."""

    videos: VideoRepository
    uploads: BlobStore
    jobs: JobQueue
    processor: UploadProcessor
    settings: Settings
    clock: Callable[[], datetime] = utcnow

    def abandon_expired_uploads(self) -> JobReport:
        """Fail every video whose upload window has passed without an upload, remove
        what it left in the uploads bucket and email its owner once."""
        report = JobReport(ABANDONED_UPLOADS)
        now = self.clock()
        ttl_s = self.settings.upload_url_ttl_s
        # No upload window is shorter than this; a big file's is longer, so the
        # index gives candidates and Video.upload_expired decides. An awaiting
        # video is not updated, so its updated_at is its created_at.
        cutoff = now - timedelta(seconds=ttl_s + UPLOAD_EVENT_GRACE_S)
        candidates = self.videos.list_idle(VideoStatus.AWAITING_UPLOAD, cutoff)
        self._run(report, candidates, lambda video: self._abandon(video, now, ttl_s, report))
        return report

    def rescue_stuck_jobs(self) -> JobReport:
        """Requeue each stuck job once; fail (with one email) what is still stuck after that."""
        report = JobReport(STUCK_JOBS)
        now = self.clock()
        cutoff = now - timedelta(seconds=self.settings.stuck_job_after_s)
        for status in STUCK_STATES:
            candidates = self.videos.list_idle(status, cutoff)
            self._run(report, candidates, lambda video: self._rescue(video, now, report))
        return report

    def _run(self, report: JobReport, candidates: Iterable[Video], handle: Callable[[Video], None]) -> None:
        for video in candidates:
            report.looked_at += 1
            # This video's lines carry its id, as its API and worker lines do.
            with telemetry.correlated(video.id):
                try:
                    handle(video)
                except StaleUpdate:
                    # Moved on since the index saw it (an upload landed, a worker
                    # reported progress, another run got there first, deleted).
                    logger.info("%s: video %s changed meanwhile; left alone", report.job, video.id)
                except Exception:
                    report.errors += 1
                    logger.exception("%s: could not handle video %s", report.job, video.id)

    def _abandon(self, video: Video, now: datetime, ttl_s: int, report: JobReport) -> None:
        if not video.upload_expired(now, ttl_s):
            return
        # Failed first, conditionally: if an upload was claimed meanwhile the
        # update is refused and nothing of it is deleted.
        self.processor.fail_and_notify(
            video,
            UPLOAD_EXPIRED_REASON,
            expected={VideoStatus.AWAITING_UPLOAD},
            unchanged_since=video.updated_at,
            cause=FailureReason.ABANDONED,
            nothing_stored=True,
        )
        report.failed += 1
        report.changed += 1
        self.uploads.delete_prefix(video.upload_prefix)
        aborted = self.uploads.abort_multipart_uploads(video.upload_prefix)
        logger.info(
            "%s: video %s failed: its upload window passed (%d multipart upload(s) aborted)",
            ABANDONED_UPLOADS,
            video.id,
            aborted,
        )

    def _rescue(self, video: Video, now: datetime, report: JobReport) -> None:
        if video.requeued_at is None:
            self._requeue(video, now)
            report.requeued += 1
        elif video.status is VideoStatus.QUEUED and self.jobs.backlog() > 0:
            # Queued and never picked up, while jobs wait for workers: its job may
            # just be waiting its turn (a completed multipart upload is queued by
            # the API, before any worker has its message). Look again next run.
            logger.info("%s: video %s is still queued behind a backlog; not failed", STUCK_JOBS, video.id)
            return
        else:
            self.processor.fail_and_notify(
                video,
                STUCK_REASON,
                expected={video.status},
                unchanged_since=video.updated_at,
                cause=FailureReason.STUCK,
            )
            logger.warning("%s: video %s failed: still stuck after its requeue", STUCK_JOBS, video.id)
            report.failed += 1
        report.changed += 1

    def _requeue(self, video: Video, now: datetime) -> None:
        # Recorded before sending, conditionally on updated_at: of two runs
        # that read the same video, only one records it and sends.
        recorded = self.videos.update(
            video, expected={video.status}, unchanged_since=video.updated_at, requeued_at=now
        )
        try:
            self.jobs.requeue_upload(self.settings.uploads_bucket, video.upload_key, video.upload_etag or "")
        except Exception:
            # Not sent: take the record back so the next run tries again rather
            # than failing a video whose job was never requeued.
            with contextlib.suppress(StaleUpdate):
                self.videos.update(recorded, unchanged_since=recorded.updated_at, requeued_at=None)
            raise
        logger.warning(
            "%s: video %s was %s with no progress since %s; its upload is back on the queue",
            STUCK_JOBS,
            video.id,
            video.status.value,
            video.updated_at.isoformat(),
        )
