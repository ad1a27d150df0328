"""The worker's use case: turn an uploaded file into a playable video.

`UploadProcessor.process` is called once per uploaded object (by the SQS
worker in `workers/app.py`, or the local event pump through it). It is safe
to call again for the same object: a video already final is not encoded
again, and its owner is emailed at most once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_plus

from chalicelib import emails
from chalicelib.domain import (
    FINAL_STATUSES,
    PROCESSABLE_STATUSES,
    Outputs,
    Rendition,
    SourceInfo,
    Video,
    VideoStatus,
    parse_upload_key,
    upload_prefix,
)
from chalicelib.media import EncodeResult, MediaInfo, MediaRejected
from chalicelib.ports import BlobStore, Mailer, StaleUpdate, VideoRepository
from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

# Time kept after ffmpeg for storing the outputs and recording the outcome.
RESERVED_AFTER_ENCODE_S = 90.0
MIN_FFMPEG_TIMEOUT_S = 30.0

# How much of the progress bar each phase fills.
PROGRESS_PROBED = 10
PROGRESS_ENCODED = 90
PROGRESS_STORED = 100


class JobInterrupted(Exception):
    """The worker's host is stopping while a job runs (the local pump on Ctrl-C or
    a code reload). Not the job's fault: the job gives its message back without
    failing the video, and the attempt does not count. An Exception, not
    SystemExit, so that Powertools releases the job's idempotency record."""


@dataclass(frozen=True)
class UploadedObject:
    bucket: str
    key: str
    # Tells one write of the key from another (S3's event sequencer and the
    # ETag); the same event delivered twice carries the same value.
    version: str = ""


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
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = (s3.get("object") or {}).get("key")
        if bucket and key:
            obj = s3.get("object") or {}
            version = f"{obj.get('sequencer', '')}:{obj.get('eTag', '')}"
            objects.append(UploadedObject(bucket=bucket, key=unquote_plus(key), version=version))
    return objects


class Transcoder(Protocol):
    def probe(self, path: str) -> MediaInfo: ...

    def encode(
        self,
        source_path: str,
        info: MediaInfo,
        out_dir: str,
        *,
        watermark_path: str,
        short_side: int = 720,
        on_progress: Callable[[float], None] | None = None,
        timeout_s: float = 780.0,
    ) -> EncodeResult: ...


@dataclass
class UploadProcessor:
    videos: VideoRepository
    uploads: BlobStore
    media: BlobStore
    mailer: Mailer
    transcoder: Transcoder
    settings: Settings
    watermark_path: str

    def process(self, key: str, *, final_attempt: bool, time_left_s: float | None = None) -> str:
        """Process the upload at `key`; returns what happened, for the logs.

        Bad input marks the video failed and emails the owner. Any other
        error propagates so the message is retried, except on the final
        attempt, where the video is marked failed (and the owner told)
        before the error goes on to put the message in the dead-letter queue.
        `time_left_s` is what the invocation has left (Lambda's remaining
        time): ffmpeg is stopped early enough to still record the outcome.
        """
        ids = parse_upload_key(key)
        if ids is None:
            logger.warning("ignoring an object that is not an upload: %s", key)
            return "ignored"
        video = self.videos.get(*ids)
        if video is None:
            # Deleted before its upload landed: drop the orphaned file.
            logger.info("video for %s is gone; removing the upload", key)
            self.uploads.delete_prefix(upload_prefix(*ids))
            return "ignored"
        if video.status in FINAL_STATUSES:
            # A duplicate delivery: the work is done; make sure the owner heard.
            self._notify_once(video)
            return "duplicate"
        try:
            video = self._encode(video, self._ffmpeg_timeout(time_left_s))
        except MediaRejected as rejected:
            video = self._fail(video, rejected.reason)
        except StaleUpdate:
            logger.info("video %s was deleted while processing", video.id)
            self.media.delete_prefix(video.media_prefix)
            return "ignored"
        except Exception:
            if final_attempt:
                logger.exception("final attempt for video %s failed", video.id)
                self._notify_once(
                    self._fail(
                        video,
                        "We could not process this video after several attempts. "
                        "Please try uploading it again later.",
                    )
                )
            raise
        self._notify_once(video)
        return video.status.value

    def _ffmpeg_timeout(self, time_left_s: float | None) -> float:
        if time_left_s is None:
            return self.settings.ffmpeg_timeout_s
        budget = time_left_s - RESERVED_AFTER_ENCODE_S
        return max(MIN_FFMPEG_TIMEOUT_S, min(self.settings.ffmpeg_timeout_s, budget))

    def _encode(self, video: Video, ffmpeg_timeout_s: float) -> Video:
        stored = self.uploads.head(video.upload_key)
        if stored is None:
            raise MediaRejected("The uploaded file could not be found. Please upload it again.")
        self._check_stored(video, stored.size_bytes, stored.content_type)
        video = self.videos.update(
            video, expected=PROCESSABLE_STATUSES, status=VideoStatus.QUEUED, progress=0, error=None
        )
        with tempfile.TemporaryDirectory(prefix="vidline-", dir=self.settings.work_dir) as work:
            source_path = os.path.join(work, "source")
            self.uploads.download(video.upload_key, source_path)
            info = self.transcoder.probe(source_path)
            self._check_media(info)
            video = self.videos.update(
                video,
                expected={VideoStatus.QUEUED},
                status=VideoStatus.PROCESSING,
                progress=PROGRESS_PROBED,
                source=SourceInfo(
                    filename=video.source.filename,
                    size_bytes=stored.size_bytes,
                    content_type=video.source.content_type,
                    duration_s=round(info.duration_s, 3),
                    width=info.width,
                    height=info.height,
                ),
            )
            started = time.monotonic()
            result = self.transcoder.encode(
                source_path,
                info,
                work,
                watermark_path=self.watermark_path,
                short_side=self.settings.rendition_short_side_px,
                on_progress=self._progress_reporter(video),
                timeout_s=ffmpeg_timeout_s,
            )
            encoded = time.monotonic()
            outputs = self._store(video, result)
            logger.info(
                "video %s encoded: ffmpeg %.2fs (maxrss %s KiB), encode step %.2fs, store %.2fs",
                video.id,
                result.ffmpeg_seconds,
                result.ffmpeg_maxrss_kb,
                encoded - started,
                time.monotonic() - encoded,
            )
        return self.videos.update(
            video,
            expected={VideoStatus.PROCESSING},
            status=VideoStatus.READY,
            progress=PROGRESS_STORED,
            outputs=outputs,
        )

    def _check_stored(self, video: Video, size_bytes: int, content_type: str | None) -> None:
        # Real S3 enforces the POST policy; checking again keeps local mode
        # (moto does not) and any other path into the bucket honest.
        declared = video.source.size_bytes
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
        limits = self.settings
        if info.duration_s > limits.max_duration_s:
            raise MediaRejected(
                f"The video is {info.duration_s / 60:.0f} minutes long; the limit is "
                f"{limits.max_duration_s / 60:.0f} minutes."
            )
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
                except StaleUpdate:
                    raise  # deleted meanwhile: stop encoding
                except Exception:
                    logger.warning("could not record progress of video %s", video.id, exc_info=True)

        return report

    def _store(self, video: Video, result: EncodeResult) -> Outputs:
        name = f"{min(result.width, result.height)}p"
        rendition_key = f"{video.media_prefix}{name}.mp4"
        thumbnail_key = f"{video.media_prefix}thumbnail.jpg"
        self.media.upload(result.rendition_path, rendition_key, "video/mp4")
        self.media.upload(result.thumbnail_path, thumbnail_key, "image/jpeg")
        return Outputs(
            renditions=(Rendition(name=name, width=result.width, height=result.height, key=rendition_key),),
            thumbnail_key=thumbnail_key,
        )

    def _fail(self, video: Video, reason: str) -> Video:
        logger.info("video %s failed: %s", video.id, reason)
        return self.videos.update(
            video, expected=PROCESSABLE_STATUSES, status=VideoStatus.FAILED, error=reason
        )

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
