"""The worker's use case: turn an uploaded file into a playable video.

`UploadProcessor.process` is called once per uploaded object (by the SQS
worker in `workers/app.py`, or the local event pump through it). It is safe
to call again for the same object: a video already final is not encoded
again, and its owner is emailed at most once.

One upload per ticket. A video's presigned POST can be used more than once
while it is valid, so its key may receive a second object while the first is
being encoded. The first job to claim the video (a conditional update from
`awaiting_upload`) records the upload's ETag on it (`Video.upload_etag`), and
from then on the video belongs to that upload:

- an event for an object with another ETag is refused: logged, nothing is
  reset, nothing is deleted, and the message is done;
- the same upload delivered again, or retried after a failure, carries on;
- an event whose object was already replaced when its job looks (the key's
  ETag is no longer the event's) claims nothing: the newer object's own
  event will;
- the job reads exactly the bytes it claimed: ffmpeg reads a presigned GET
  whose signature includes If-Match on the claimed ETag. If another upload
  replaced them before that, or between a failed attempt and its retry, the
  claimed upload is gone for good (the bucket keeps one version per key): the
  video fails with a reason that asks for a new upload, rather than being
  encoded from a file it never took.

Stream, don't copy. The source is never downloaded: probing and the one
ffmpeg process read it over HTTP from that short-lived URL. A read that
breaks mid-way is a MediaProcessingError (retried).

Playable while processing. ffmpeg writes the HLS ladder (EVENT playlists)
into the job directory while it encodes; an `HlsPublisher` thread stores each
finished segment, then its playlist, and deletes the local segment. Once the
master playlist and a segment of every variant are stored, the video becomes
`playable` (still `processing`, outputs with the HLS master and rungs, no
MP4 yet). At the end the final (ENDLIST) playlists, the MP4 and the
thumbnail are stored and the video is `ready`. A run that fails after the
video became playable makes it unplayable (if it still points at this run)
before removing the run's objects; its retry publishes a new run.

Each run writes its outputs under its own prefix (`Video.outputs_prefix`).
A run that ends without recording them (its video was deleted or changed
under it, or an error) removes that prefix unless the video's recorded
outputs point into it, so it never touches what another run stored.

Failures. `MediaRejected` (the file is bad) fails the video at once with its
own reason and one email, and the message is done: retrying cannot help.
Anything else (`MediaProcessingError`, AWS errors) is raised so that SQS
retries the message. On the last receive the video is failed and its owner
emailed before raising, for quick feedback (on AWS a failed message reaches
the dead-letter queue only after the visibility timeout); the dead-letter
queue's handler (`give_up`) fails whatever a crashed or killed worker left
behind. `JobInterrupted` (the local pump stopping on Ctrl-C or a code reload)
is never the video's fault: the job hands its message back untouched, with no
failure and no email, on any attempt.

Scratch space. Each job works in its own directory under `work_dir`
(`vidline-job-*`), holding an exclusive `flock` on a lock file inside it for
its whole life. A process's first job removes the job directories whose lock
it can take: their owner died (a crash, an out-of-memory kill, a timeout),
and no live worker sharing the same `/tmp` can be using them.

What a job needs (measured with bench/job_resources.py: a 60 s 1080p30
source of 117 MB, the 1080/720/480/360 ladder and the 720p MP4):

- `/tmp`: 13 MB at peak. The source is never copied there; HLS segments are
  deleted as soon as they are stored; what stays until the end is the MP4
  being written (its bitrate × the duration: the 720p MP4 is capped at
  3 Mb/s + 128 kb/s of audio, so at most about 24 MB a minute, 705 MB for
  the 30-minute limit) and the thumbnail, plus the few segments not yet
  stored (a few MB). It does not depend on the source's size.
- memory: about 880 MB at peak for the worker's process and its ffmpeg
  together (ffmpeg about 670 MB, Python about 200 MB), for a 1080p source.
  It grows with the source's frame size and the number of rungs, not with
  its length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from chalicelib import emails, telemetry
from chalicelib import usage as usage_rules
from chalicelib.domain import (
    FINAL_STATUSES,
    PROCESSABLE_STATUSES,
    Outputs,
    Rendition,
    Rung,
    Video,
    VideoStatus,
    parse_upload_key,
    upload_prefix,
)
from chalicelib.media import judge_decoded_duration
from chalicelib.ports import (
    BlobStore,
    Mailer,
    MediaInfo,
    MediaProcessingError,
    MediaRejected,
    MediaSource,
    ObjectChanged,
    StaleUpdate,
    StoredObject,
    Transcoder,
    TranscodeResult,
    VideoRepository,
)
from chalicelib.publishing import DEFAULT_POLL_S, HlsPublisher
from chalicelib.settings import Settings
from chalicelib.telemetry import FailureReason

logger = logging.getLogger(__name__)

# Time kept after ffmpeg for storing the outputs and recording the outcome.
RESERVED_AFTER_ENCODE_S = 90.0
# How long the source's presigned GET outlives ffmpeg's own deadline.
SOURCE_URL_MARGIN_S = 60
MIN_FFMPEG_TIMEOUT_S = 30.0

# How much of the progress bar each phase fills.
PROGRESS_PROBED = 10
PROGRESS_ENCODED = 90
PROGRESS_STORED = 100

GAVE_UP_REASON = (
    "We could not process this video after several attempts. Please try uploading it again later."
)
UPLOAD_REPLACED_REASON = (
    "The uploaded file was replaced or removed before we could process it. "
    "Please create a new video and upload the file again."
)
UPLOAD_MISSING_REASON = "The uploaded file could not be found. Please upload it again."

# Job directories under work_dir, and the lock each one's job holds.
JOB_DIR_PREFIX = "vidline-job-"
JOB_LOCK_NAME = ".lock"
# Held shared while a job directory is made and locked, exclusively while
# sweeping, so a sweep never sees a directory whose lock is not held yet.
SWEEP_LOCK_NAME = "vidline-jobs.lock"


class JobInterrupted(Exception):
    """The worker's host is stopping while a job runs (the local pump on Ctrl-C or
    a code reload). Not the job's fault: the job gives its message back without
    failing the video, and the attempt does not count. An Exception, not
    SystemExit, so that Powertools releases the job's idempotency record."""


@dataclass(frozen=True)
class UploadedObject:
    """One object S3 says was created: where, and which write of the key it was."""

    bucket: str
    key: str
    # S3's ETag of the object, without quotes; it tells one upload to a key
    # from another. Empty when the event did not say.
    etag: str = ""

    def as_job(self) -> dict[str, str]:
        """The job's identity, e.g. as the idempotency key: the same upload
        delivered twice is one job, another upload to the key another."""
        return dataclasses.asdict(self)

    @property
    def video_id(self) -> str | None:
        """The id of the video this upload is for, if the key is an upload's."""
        ids = parse_upload_key(self.key)
        return ids[1] if ids else None

    @classmethod
    def from_job(cls, job: dict[str, str]) -> UploadedObject:
        return cls(bucket=job["bucket"], key=job["key"], etag=job.get("etag", ""))


def uploaded_objects(body: str) -> list[UploadedObject]:
    """The ObjectCreated records in an SQS message body from S3.

    S3's `s3:TestEvent` (sent when a notification is configured) and any
    other event type yield nothing. Keys arrive URL-encoded with `+` for
    spaces.
    """
    try:
        message = json.loads(body)
    except json.JSONDecodeError:
        logger.warning("ignoring a message that is not JSON: %.200s", body)
        return []
    if not isinstance(message, dict):
        return []
    objects = []
    for record in message.get("Records") or []:
        if not isinstance(record, dict) or not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if bucket and key:
            etag = str(obj.get("eTag") or "").strip('"')
            objects.append(UploadedObject(bucket=bucket, key=unquote_plus(key), etag=etag))
    return objects


@dataclass
class _Run:
    """What one processing run wrote, so that it can take back only that."""

    outputs_prefix: str
    written: list[str] = field(default_factory=list)
    # True once the video records these outputs: they are the video's now.
    kept: bool = False


@dataclass
class UploadProcessor:
    videos: VideoRepository
    uploads: BlobStore
    media: BlobStore
    mailer: Mailer
    transcoder: Transcoder
    settings: Settings
    # How often the HLS publisher looks for new segments.
    publish_poll_s: float = DEFAULT_POLL_S
    _scratch_swept: bool = field(default=False, init=False, repr=False)

    def process(
        self, uploaded: UploadedObject, *, final_attempt: bool, time_left_s: float | None = None
    ) -> str:
        """Process the upload `uploaded`; returns what happened, for the logs.

        Bad input marks the video failed and emails the owner. Any other
        error propagates so the message is retried; on the final attempt the
        video is marked failed (and the owner told) first, unless the error is
        JobInterrupted. `time_left_s` is what the invocation has left
        (Lambda's remaining time): ffmpeg is stopped early enough to still
        record the outcome.
        """
        if not self._scratch_swept:
            self._scratch_swept = True
            remove_abandoned_job_dirs(self.settings.work_dir)
        ids = parse_upload_key(uploaded.key)
        if ids is None:
            logger.warning("ignoring an object that is not an upload: %s", uploaded.key)
            return "ignored"
        video = self.videos.get(*ids)
        if video is None:
            # Deleted before its upload landed: drop the orphaned file.
            logger.info("video for %s is gone; removing the upload", uploaded.key)
            self.uploads.delete_prefix(upload_prefix(*ids))
            return "ignored"
        if video.refuses_upload(uploaded.etag):
            logger.warning(
                "refusing a second upload to video %s (ETag %s; it took %s)",
                video.id,
                uploaded.etag,
                video.upload_etag,
            )
            return "refused"
        if video.status in FINAL_STATUSES:
            # A duplicate delivery: the work is done; make sure the owner heard.
            self._notify_once(video)
            return "duplicate"
        run = _Run(outputs_prefix=video.outputs_prefix(secrets.token_hex(8)))
        try:
            return self._attempt(video, uploaded, run, self._ffmpeg_timeout(time_left_s))
        except JobInterrupted:
            logger.warning("the job for video %s was interrupted; its message goes back", video.id)
            raise
        except Exception:
            if final_attempt:
                logger.exception("final attempt for video %s failed", video.id)
                self.give_up(uploaded)
            raise
        finally:
            self._remove_unkept_outputs(video, run)

    def give_up(self, uploaded: UploadedObject) -> str:
        """The upload's job failed every attempt (its message is in the dead-letter
        queue): fail the video with a reason unless it is final already, and
        make sure its owner is emailed once. Returns what happened, for the logs.

        Does nothing for a deleted video, a key that is not an upload or an
        upload the video refused; safe to call again for the same message.
        """
        ids = parse_upload_key(uploaded.key)
        video = self.videos.get(*ids) if ids else None
        if video is None or video.refuses_upload(uploaded.etag):
            logger.info("nothing to give up for %s", uploaded.key)
            return "ignored"
        if video.status not in FINAL_STATUSES:
            logger.warning("giving up on video %s: its job failed every attempt", video.id)
            try:
                video = self._fail(video, GAVE_UP_REASON, FailureReason.GAVE_UP)
            except StaleUpdate:  # it became final, or was deleted, meanwhile
                current = self.videos.get(video.owner_id, video.id)
                if current is None:
                    return "ignored"
                video = current
            else:
                video = self._unpublish_partial_outputs(video)
        self._notify_once(video)
        return video.status.value

    def fail_and_notify(
        self,
        video: Video,
        reason: str,
        *,
        expected: Iterable[VideoStatus] = PROCESSABLE_STATUSES,
        unchanged_since: datetime | None = None,
        cause: FailureReason,
        nothing_stored: bool = False,
    ) -> Video:
        """Fail `video` with `reason` (a sentence for people) if it is still in
        one of `expected` and, with `unchanged_since`, nobody updated it since;
        take back any partial outputs a dead run left it showing; email its
        owner once. Raises StaleUpdate, changing nothing, if the video is gone
        or moved on. For the scheduled jobs, which find videos nothing else
        will finish. With `nothing_stored` (no upload landed, and what one left
        is being deleted) the bytes counted for the video are given back and its
        source's size becomes 0."""
        logger.info("video %s failed: %s", video.id, reason)
        changes: dict[str, Any] = {}
        usage = usage_rules.became_failed(video)
        if nothing_stored:
            usage = usage_rules.abandoned(video)
            changes["source"] = dataclasses.replace(video.source, size_bytes=0)
        failed = self.videos.update(
            video,
            expected=expected,
            unchanged_since=unchanged_since,
            status=VideoStatus.FAILED,
            error=reason,
            usage=usage,
            **changes,
        )
        telemetry.video_failed(cause)
        failed = self._unpublish_partial_outputs(failed)
        self._notify_once(failed)
        return failed

    def _attempt(self, video: Video, uploaded: UploadedObject, run: _Run, ffmpeg_timeout_s: float) -> str:
        try:
            try:
                claimed = self._claim(video, uploaded)
                if claimed is None:
                    return "refused"
                video, stored = claimed
                video = self._encode(video, stored, run, ffmpeg_timeout_s)
            except MediaRejected as rejected:
                cause = (
                    FailureReason.UPLOAD_REPLACED
                    if rejected.reason == UPLOAD_MISSING_REASON
                    else FailureReason.REJECTED_MEDIA
                )
                video = self._fail(video, rejected.reason, cause)
            except ObjectChanged:
                logger.warning("the upload video %s took was replaced before it was read", video.id)
                video = self._fail(video, UPLOAD_REPLACED_REASON, FailureReason.UPLOAD_REPLACED)
        except StaleUpdate:
            current = self.videos.get(video.owner_id, video.id)
            if current is None:
                logger.info("video %s was deleted while processing", video.id)
                return "ignored"
            logger.warning("video %s changed while processing (now %s)", video.id, current.status.value)
            return "stale"
        self._notify_once(video)
        return video.status.value

    def _claim(self, video: Video, uploaded: UploadedObject) -> tuple[Video, StoredObject] | None:
        """The video, taken for this upload (queued, progress reset), and the
        stored upload; None if the video belongs to another upload. Raises ObjectChanged if the upload it took
        is no longer stored, MediaRejected if the stored file breaks its ticket."""
        stored = self.uploads.head(video.upload_key)
        if stored is None:
            if video.upload_etag is not None:
                raise ObjectChanged(video.upload_key)
            raise MediaRejected(UPLOAD_MISSING_REASON)
        etag = uploaded.etag or stored.etag
        if video.upload_etag is None:
            if stored.etag != etag:
                logger.info("upload %s of video %s was replaced before it was claimed", etag, video.id)
                return None
            try:
                # The claim: from awaiting_upload, so only one upload can win it.
                # (A video queued or processing with no ETag was claimed before
                # ETags were recorded: a job in flight across a deploy.)
                claimed = self.videos.update(
                    video,
                    expected={video.status},
                    status=VideoStatus.QUEUED,
                    progress=0,
                    error=None,
                    upload_etag=etag,
                )
            except StaleUpdate:
                # Another job claimed it meanwhile: which upload did it take?
                current = self.videos.get(video.owner_id, video.id)
                if current is None or current.upload_etag is None:
                    raise
                if current.refuses_upload(etag):
                    return None
                video = current
            else:
                self._check_stored(claimed, stored)
                return claimed, stored
        if stored.etag != video.upload_etag:
            if not uploaded.etag:
                # An event that does not say which upload it is cannot speak for
                # the one the video took (whose own event does): not this job's.
                return None
            raise ObjectChanged(video.upload_key)
        self._check_stored(video, stored)
        # A retry: outputs the video shows were published by a run that died
        # (killed, timed out) and are taken back with it; this run makes its own.
        left_by_dead_run = video.outputs
        video = self.videos.update(
            video,
            expected={VideoStatus.QUEUED, VideoStatus.PROCESSING},
            status=VideoStatus.QUEUED,
            progress=0,
            error=None,
            playable=False,
            outputs=None,
        )
        self._remove_run_of(left_by_dead_run)
        return video, stored

    def _ffmpeg_timeout(self, time_left_s: float | None) -> float:
        if time_left_s is None:
            return self.settings.ffmpeg_timeout_s
        budget = time_left_s - RESERVED_AFTER_ENCODE_S
        return max(MIN_FFMPEG_TIMEOUT_S, min(self.settings.ffmpeg_timeout_s, budget))

    def _encode(self, video: Video, stored: StoredObject, run: _Run, ffmpeg_timeout_s: float) -> Video:
        # ffmpeg reads the claimed upload straight from the bucket. The URL must
        # outlive the encode: ffmpeg may open it again to seek (an MP4 whose index
        # is at the end).
        source = self.uploads.presign_download(
            video.upload_key,
            if_match=video.upload_etag,
            expires_s=int(ffmpeg_timeout_s + SOURCE_URL_MARGIN_S),
        )
        with self._reading_claimed(video):
            info = self.transcoder.probe(source, max_pixels=self.settings.frame_pixel_limit)
        self._check_media(info)
        video = self.videos.update(
            video,
            expected={VideoStatus.QUEUED},
            status=VideoStatus.PROCESSING,
            progress=PROGRESS_PROBED,
            # The bytes counted for the video become those that landed.
            usage=usage_rules.source_measured(video, stored.size_bytes),
            source=dataclasses.replace(
                video.source,
                size_bytes=stored.size_bytes,
                duration_s=round(info.duration_s, 3),
                width=info.width,
                height=info.height,
            ),
        )
        with job_dir(self.settings.work_dir) as work:
            started = time.monotonic()
            result, publisher = self._transcode_and_publish(video, source, info, work, run, ffmpeg_timeout_s)
            encoded = time.monotonic()
            outputs = self._store(result, run, publisher.master_key)
            logger.info(
                "video %s encoded: ffmpeg %.2fs (maxrss %s KiB), encode step %.2fs, store %.2fs, "
                "playable after %s",
                video.id,
                result.ffmpeg_seconds,
                result.ffmpeg_maxrss_kb,
                encoded - started,
                time.monotonic() - encoded,
                "-" if publisher.playable_after_s is None else f"{publisher.playable_after_s:.2f}s",
            )
            telemetry.seconds("EncodeSeconds", result.ffmpeg_seconds)
        video = self.videos.update(
            video,
            expected={VideoStatus.PROCESSING},
            status=VideoStatus.READY,
            progress=PROGRESS_STORED,
            playable=True,
            outputs=outputs,
            usage=usage_rules.became_ready(video, result.duration_s),
            # What decoding found, not what the header said.
            source=dataclasses.replace(video.source, duration_s=round(result.duration_s, 3)),
        )
        run.kept = True
        return video

    def _transcode_and_publish(
        self,
        video: Video,
        source: MediaSource,
        info: MediaInfo,
        work: str,
        run: _Run,
        ffmpeg_timeout_s: float,
    ) -> tuple[TranscodeResult, HlsPublisher]:
        """Run ffmpeg while a publisher thread stores its HLS output as it appears
        and makes the video playable once every variant has a segment stored."""

        def on_playable(rungs: tuple[Rung, ...]) -> None:
            self.videos.update(
                video,
                expected={VideoStatus.PROCESSING},
                playable=True,
                outputs=Outputs(
                    renditions=(),
                    thumbnail_key=None,
                    hls_master_key=publisher.master_key,
                    rungs=rungs,
                ),
            )
            logger.info("video %s is playable (%s)", video.id, ", ".join(r.name for r in rungs))

        publisher = HlsPublisher(
            self.media,
            os.path.join(work, "hls"),
            f"{run.outputs_prefix}hls/",
            written=run.written,
            on_playable=on_playable,
            poll_s=self.publish_poll_s,
        )
        report_progress = self._progress_reporter(video)

        def on_progress(fraction: float) -> None:
            publisher.check()  # a failed upload or update stops ffmpeg
            report_progress(fraction)

        publisher.start()
        try:
            with self._reading_claimed(video):
                result = self.transcoder.transcode(
                    source,
                    info,
                    work,
                    ladder=self.settings.ladder,
                    mp4_short_side=self.settings.rendition_short_side_px,
                    segment_s=self.settings.hls_segment_s,
                    max_duration_s=self.settings.max_duration_s,
                    max_pixels=self.settings.frame_pixel_limit,
                    on_progress=on_progress,
                    timeout_s=ffmpeg_timeout_s,
                )
            publisher.finish()
        finally:
            publisher.stop()
        return result, publisher

    @contextlib.contextmanager
    def _reading_claimed(self, video: Video) -> Iterator[None]:
        """Reading the source failed: if that is because the claimed upload is no
        longer stored (the presigned GET's If-Match refused another object), say
        so with ObjectChanged, which no retry can help."""
        try:
            yield
        except (MediaRejected, MediaProcessingError) as error:
            stored = self.uploads.head(video.upload_key)
            if stored is None or stored.etag != video.upload_etag:
                raise ObjectChanged(video.upload_key) from error
            raise

    def _check_stored(self, video: Video, stored: StoredObject) -> None:
        # Real S3 enforces the POST policy; checking again keeps local mode
        # (moto does not) and any other path into the bucket honest.
        declared = video.source.size_bytes
        size_bytes, content_type = stored.size_bytes, stored.content_type
        if size_bytes == 0:
            raise MediaRejected("The uploaded file is empty.")
        if size_bytes > declared or size_bytes > self.settings.max_upload_bytes:
            raise MediaRejected(
                f"The uploaded file is {size_bytes} bytes, larger than the "
                f"{min(declared, self.settings.max_upload_bytes)} bytes allowed."
            )
        if content_type != video.source.content_type:
            raise MediaRejected(
                f"The uploaded file's type ({content_type or 'none'}) is not the "
                f"declared type ({video.source.content_type})."
            )

    def _check_media(self, info: MediaInfo) -> None:
        # What the header says, judged as encoding judges what it really decodes:
        # an honest long video is refused before it costs an encode.
        limits = self.settings
        too_long = judge_decoded_duration(
            info.duration_s, header_s=info.duration_s, max_duration_s=limits.max_duration_s
        )
        if too_long is not None:
            raise too_long
        if max(info.width, info.height) > limits.max_dimension_px:
            raise MediaRejected(
                f"The video is {info.width}×{info.height} pixels; the limit is "
                f"{limits.max_dimension_px} pixels on either side."
            )

    def _progress_reporter(self, video: Video) -> Callable[[float], None]:
        last = PROGRESS_PROBED

        def report(fraction: float) -> None:
            nonlocal last
            span = PROGRESS_ENCODED - PROGRESS_PROBED
            value = PROGRESS_PROBED + int(span * min(max(fraction, 0.0), 1.0))
            if value >= last + 5:
                last = value
                try:
                    self.videos.update(video, expected={VideoStatus.PROCESSING}, progress=value)
                except (StaleUpdate, JobInterrupted):
                    raise  # changed or deleted meanwhile, or stopping: stop encoding
                except Exception:
                    logger.warning("could not record progress of video %s", video.id, exc_info=True)

        return report

    def _store(self, result: TranscodeResult, run: _Run, hls_master_key: str) -> Outputs:
        """Store the MP4 and the thumbnail (the HLS outputs are stored already)."""
        rung = result.mp4_rung
        rendition_key = f"{run.outputs_prefix}{rung.name}.mp4"
        thumbnail_key = f"{run.outputs_prefix}thumbnail.jpg"
        for path, key, content_type in (
            (result.mp4_path, rendition_key, "video/mp4"),
            (result.thumbnail_path, thumbnail_key, "image/jpeg"),
        ):
            run.written.append(key)
            self.media.upload(path, key, content_type)
        return Outputs(
            renditions=(Rendition(name=rung.name, width=rung.width, height=rung.height, key=rendition_key),),
            thumbnail_key=thumbnail_key,
            hls_master_key=hls_master_key,
            rungs=result.rungs,
        )

    def _remove_unkept_outputs(self, video: Video, run: _Run) -> None:
        """Take back what a run that did not finish wrote, and only that. A video
        left playable from this run's HLS is made unplayable first, so no player
        is sent to objects that are about to go."""
        if run.kept or not run.written:
            return
        try:
            current = self.videos.get(video.owner_id, video.id)
            if current is not None and current.uses_outputs_under(run.outputs_prefix):
                if current.status is VideoStatus.READY:
                    # The READY update was applied although its answer was lost:
                    # outputs the video records as final are never removed.
                    return
                self.videos.update(current, expected={current.status}, playable=False, outputs=None)
            self.media.delete_prefix(run.outputs_prefix)
            logger.info("removed the unused outputs of video %s under %s", video.id, run.outputs_prefix)
        except JobInterrupted:
            raise
        except Exception:
            logger.warning("could not remove the outputs under %s", run.outputs_prefix, exc_info=True)

    def _unpublish_partial_outputs(self, video: Video) -> Video:
        """A failed video that a killed run left playable: no longer playable, and
        that run's objects removed (the run cannot take them back itself)."""
        if video.status is not VideoStatus.FAILED or video.outputs is None:
            return video
        outputs = video.outputs
        video = self.videos.update(video, expected={VideoStatus.FAILED}, playable=False, outputs=None)
        self._remove_run_of(outputs)
        return video

    def _remove_run_of(self, outputs: Outputs | None) -> None:
        """Remove every object of the run that published `outputs` (the video no longer names them)."""
        hls_prefix = outputs.hls_prefix if outputs is not None else None
        if hls_prefix is not None:
            self.media.delete_prefix(hls_prefix.removesuffix("hls/"))

    def _fail(self, video: Video, reason: str, cause: FailureReason) -> Video:
        logger.info("video %s failed: %s", video.id, reason)
        failed = self.videos.update(
            video,
            expected=PROCESSABLE_STATUSES,
            status=VideoStatus.FAILED,
            error=reason,
            usage=usage_rules.became_failed(video),
        )
        telemetry.video_failed(cause)
        return failed

    def _notify_once(self, video: Video) -> None:
        if video.notified_at is not None or video.status not in FINAL_STATUSES:
            return
        link = f"{self.settings.app_url.rstrip('/')}/?video={video.id}"
        email = (
            emails.ready_email(video, link)
            if video.status is VideoStatus.READY
            else emails.failed_email(video, link)
        )
        # Claim first, then send: only one delivery can win the claim; if
        # sending fails the claim is released so a retry sends it. A crash
        # between the two loses one email rather than ever sending two.
        if not self.videos.claim_notification(video):
            return
        try:
            self.mailer.send(video.owner_email, email.subject, email.text, email.html)
        except Exception:
            self.videos.release_notification(video)
            raise
        logger.info("video %s: its owner was emailed that it is %s", video.id, video.status.value)
        telemetry.count("EmailsSent")


@contextlib.contextmanager
def _flock(path: str, operation: int) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def job_dir(work_dir: str) -> Iterator[str]:
    """A fresh directory for one job under `work_dir`, locked for the job's life
    and removed after it. A process that dies leaves it unlocked, for
    `remove_abandoned_job_dirs` to find."""
    with _flock(os.path.join(work_dir, SWEEP_LOCK_NAME), fcntl.LOCK_SH):
        path = tempfile.mkdtemp(prefix=JOB_DIR_PREFIX, dir=work_dir)
        lock_fd = os.open(os.path.join(path, JOB_LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock_fd)


def remove_abandoned_job_dirs(work_dir: str) -> list[str]:
    """Remove the job directories under `work_dir` that no live job holds, e.g.
    those a crashed or killed worker left; returns their paths.

    A directory whose lock another process (or thread) holds is in use and
    kept. One without a lock file is removable too: a job creates and locks
    its lock file before it lets go of the sweep lock, and keeps the lock
    until its directory is gone.
    """
    removed: list[str] = []
    try:
        with _flock(os.path.join(work_dir, SWEEP_LOCK_NAME), fcntl.LOCK_EX):
            for entry in os.scandir(work_dir):
                is_job_dir = entry.name.startswith(JOB_DIR_PREFIX) and entry.is_dir(follow_symlinks=False)
                if is_job_dir and _remove_if_unlocked(entry.path):
                    removed.append(entry.path)
    except OSError:
        logger.warning("could not clean the scratch space in %s", work_dir, exc_info=True)
    if removed:
        logger.info("removed %d job directories a stopped worker left: %s", len(removed), removed)
    return removed


def _remove_if_unlocked(path: str) -> bool:
    try:
        lock_fd = os.open(os.path.join(path, JOB_LOCK_NAME), os.O_RDWR)
    except FileNotFoundError:
        shutil.rmtree(path, ignore_errors=True)
        return True
    except OSError:
        return False  # not ours to judge (e.g. another user's)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live job holds it
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(lock_fd)
    return True
