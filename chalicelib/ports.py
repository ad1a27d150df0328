"""The interfaces the service layer speaks to.

AWS implementations live in `chalicelib.adapters`; tests may use small
in-memory fakes. Nothing here imports boto3 or pynamodb.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from chalicelib.domain import Page, Principal, Rung, Tokens, UploadedPart, UploadTicket, Video, VideoStatus
from chalicelib.usage import QuotaUsage, RolledUpDay, UsageChange, UsageDelta


class StaleUpdate(Exception):
    """A conditional update found the video gone or in another state."""


class ObjectChanged(Exception):
    """The object under a key is no longer the version asked for (replaced or removed)."""


class NoSuchUpload(Exception):
    """The multipart upload is not open any more (completed or aborted), or never was."""


class PartsRefused(Exception):
    """The store refused to complete a multipart upload from the parts given
    (a part missing or replaced, or one too small); ``reason`` says why, for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------ media


class MediaRejected(Exception):
    """The input is not something we can process (permanent); ``reason`` is a
    sentence for people, shown to the user and emailed, so it never contains
    paths or ffmpeg output."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaProcessingError(Exception):
    """Processing failed for a reason that may be transient (a timeout, a killed
    ffmpeg, a full disk, a source read that broke): the job should be retried."""


@dataclass(frozen=True)
class MediaInfo:
    """What probing learned about a media file."""

    duration_s: float  # as the header says: the file may hold more or less
    width: int  # as displayed, i.e. after rotation metadata (and pixel aspect) is applied
    height: int
    video_codec: str
    audio_codec: str | None
    rotation: int  # degrees from the display matrix, normalised to 0..359; 0 if none
    # The demuxer that read it, as ffmpeg names it ("mov,mp4,m4a,3gp,3g2,mj2",
    # "matroska,webm"); transcoding forces the same one. Empty if unknown.
    container: str = ""
    # Frames per second as the header says; 0.0 if unknown.
    frame_rate: float = 0.0


@dataclass(frozen=True)
class MediaSource:
    """Where ffmpeg reads the upload: a local path, or a presigned http(s) URL plus headers to send."""

    location: str
    headers: tuple[tuple[str, str], ...] = ()  # e.g. (("If-Match", '"etag"'),)


@dataclass(frozen=True)
class TranscodeResult:
    """What one transcode made (all inside ``out_dir``) and what it cost."""

    out_dir: str
    # master.m3u8, <rung>/index.m3u8, <rung>/init_N.mp4, <rung>/segNNNNN.m4s, audio/...
    hls_dir: str
    rungs: tuple[Rung, ...]  # what was made, largest first
    mp4_path: str  # faststart H.264/AAC MP4 at the MP4 rung
    mp4_rung: Rung
    thumbnail_path: str  # JPEG
    duration_s: float  # decoded: the true length, whatever the source's header said
    ffmpeg_seconds: float  # ffmpeg's own -benchmark rtime, else the subprocess's wall time
    ffmpeg_maxrss_kb: int | None


class Transcoder(Protocol):
    """Probes an upload and turns it into an HLS ladder, an MP4 and a thumbnail."""

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        """Describe the source, or raise MediaRejected / MediaProcessingError."""
        ...

    def transcode(
        self,
        source: MediaSource,
        info: MediaInfo,
        out_dir: str,
        *,
        ladder: Sequence[int],
        mp4_short_side: int,
        segment_s: float,
        max_duration_s: float,
        max_pixels: int,
        on_progress: Callable[[float], None] | None = None,
        timeout_s: float = 780.0,
    ) -> TranscodeResult:
        """One ffmpeg process in the calling thread: HLS into out_dir/hls while it
        runs, then the MP4 and thumbnail. Raises MediaRejected (the file is bad),
        MediaProcessingError (try again) or ObjectChanged (the source was replaced)."""
        ...


class VideoRepository(Protocol):
    """Videos, keyed by owner and id. No method but `add` ever creates one.

    tests/contract/test_video_repository.py holds every implementation
    (DynamoDB and the tests' in-memory fake) to the behaviour described here.
    """

    def add(self, video: Video, *, usage: UsageChange | None = None) -> None:
        """Store a new video with every field; RuntimeError if its id is taken.
        With `usage`, its counters change in the same transaction, or nothing
        happens: OverQuota if the change's limits refuse it."""
        ...

    def get(self, owner_id: str, video_id: str) -> Video | None:
        """The owner's video, or None (also for another owner's video id)."""
        ...

    def list_for_owner(self, owner_id: str, limit: int, cursor: str | None) -> Page:
        """One owner's videos, newest first, at most `limit`; `next_cursor`
        is None on the last page. `cursor` is opaque; one this repository did
        not issue raises InvalidRequest."""
        ...

    def update(
        self,
        video: Video,
        *,
        expected: Iterable[VideoStatus] | None = None,
        unchanged_since: datetime | None = None,
        usage: UsageChange | None = None,
        **changes: Any,
    ) -> Video:
        """Apply `changes` (None removes a field) and bump `updated_at` if the
        video still exists and, with `expected`, is in one of those states and,
        with `unchanged_since`, its `updated_at` is still exactly that (nobody
        changed it since it was read); return the stored video. Else raise
        StaleUpdate and change nothing. With `usage`, its counters change in
        the same transaction: exactly when the update is applied."""
        ...

    def list_idle(self, status: VideoStatus, updated_before: datetime) -> Iterator[Video]:
        """Every video in the open `status` (awaiting_upload, queued or
        processing) last updated before `updated_before`, least recently
        updated first, from an index of open videos (never a scan of the
        table). The index lags writes slightly: act on a video with a
        conditional update (`unchanged_since`). ValueError for a final status."""
        ...

    def claim_notification(self, video: Video) -> bool:
        """Record that the owner is being emailed about the video's final
        status; False if that was recorded already (or the video is gone)."""
        ...

    def release_notification(self, video: Video) -> None:
        """Undo `claim_notification` after the email could not be sent, so a
        retry can claim it again. Nothing happens if the video is gone."""
        ...

    def delete(
        self,
        owner_id: str,
        video_id: str,
        *,
        usage: UsageChange | None = None,
        unchanged_since: datetime | None = None,
    ) -> None:
        """Remove the video; deleting one that is not there is not an error.
        With `usage`, its counters change in the same transaction, only if the
        video was there. With `unchanged_since`, only a video whose `updated_at`
        is still exactly that is removed; else StaleUpdate and nothing changes."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be reached (health check)."""
        ...


class UsageRepository(Protocol):
    """The usage counters' store (reads and the roll-up; counted writes go with the
    video's own write through VideoRepository's `usage=`).

    tests/contract/test_usage_repository.py holds DynamoDB and the fake to it."""

    def quota_usage(self, owner_id: str, day: date) -> QuotaUsage:
        """What counts against the owner's quotas on `day` (and in its month)."""
        ...

    def user_days(self, owner_id: str, first: date) -> tuple[dict[date, UsageDelta], int]:
        """The owner's counters of every day from `first` on, and the bytes they store now."""
        ...

    def site_shard_days(self, first: date, last: date) -> dict[date, UsageDelta]:
        """Site-wide counters from `first` to `last`, summed over the shards (days with any)."""
        ...

    def first_site_day(self) -> date | None:
        """The earliest day any site-wide counter was written, or None."""
        ...

    def rolled_up_days(self, first: date, last: date) -> dict[date, RolledUpDay]:
        """The rolled-up site-wide days from `first` to `last`."""
        ...

    def rolled_up_through(self) -> date | None:
        """The last day the roll-up has folded (every day before it is folded too)."""
        ...

    def save_rolled_up(self, days: Iterable[RolledUpDay], through: date) -> None:
        """Store folded days (SET, so storing one again changes nothing), then
        record `through` as the last day folded."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be reached (health check)."""
        ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    content_type: str | None
    # Identifies this version of the object (S3's ETag, without quotes).
    etag: str = ""


# Cache-Control of stored objects. Objects never change under their key, and
# only signed URLs reach them (the CDN checks those before its cache), so
# browsers and CDN edges may keep them for good; only playlists that still grow
# (HLS EVENT playlists while a video is processing) must be revalidated.
IMMUTABLE = "max-age=31536000, immutable"
NO_CACHE = "no-cache"


class BlobStore(Protocol):
    """One bucket of objects."""

    def presign_upload(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> UploadTicket: ...

    def head(self, key: str) -> StoredObject | None: ...

    def presign_download(self, key: str, *, if_match: str | None, expires_s: int) -> MediaSource:
        """A GET of the object that a reader (ffmpeg) can make for `expires_s` seconds.
        With `if_match`, the If-Match header is part of the signature and is in the
        source's headers: the store serves only the version with that ETag (412 else)."""
        ...

    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def abort_multipart_uploads(self, prefix: str) -> int:
        """Abort every unfinished multipart upload to a key under `prefix`, freeing
        the parts it holds; returns how many were aborted."""
        ...

    def start_multipart_upload(self, key: str, content_type: str) -> str:
        """Open a multipart upload of an object of `content_type` to `key`; its upload id."""
        ...

    def presign_part_upload(
        self, key: str, upload_id: str, part_number: int, size_bytes: int, expires_s: int
    ) -> str:
        """A URL that PUTs part `part_number` of the upload, of exactly `size_bytes`
        (the Content-Length is signed), for `expires_s` seconds."""
        ...

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """Every part the upload holds so far, by part number; NoSuchUpload if it is not open."""
        ...

    def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> str:
        """Join the parts ((part number, ETag), in order) into the object; its ETag.
        NoSuchUpload if the upload is not open, PartsRefused if the parts do not fit."""
        ...

    def check(self) -> None: ...


class Cache(Protocol):
    """A cache for expensive reads: JSON-serialisable values under string keys,
    each kept for its own time to live. A broken cache never fails the caller:
    the value is computed instead."""

    def get_or_compute(self, key: str, ttl_s: int, compute: Callable[[], Any]) -> Any:
        """The value cached under `key` while younger than `ttl_s` seconds, else
        `compute()`'s (cached for next time). Concurrent callers of one key wait
        for a single computation (or get the stale value) rather than each computing."""
        ...

    def invalidate(self, key: str) -> None:
        """Forget `key`, so the next read computes it afresh."""
        ...

    def check(self) -> None:
        """Raise if the cache's store cannot be reached (health check)."""
        ...


class JobQueue(Protocol):
    """The queue of upload jobs (S3 ObjectCreated events) and its dead-letter queue."""

    def requeue_upload(self, bucket: str, key: str, etag: str) -> None:
        """Put a job for the upload `key` (of `etag`) back on the queue, shaped like
        S3's own ObjectCreated event so the worker handles it the same way."""
        ...

    def dead_letter_depth(self) -> int:
        """How many messages wait in the dead-letter queue (approximate)."""
        ...

    def backlog(self) -> int:
        """How many jobs wait in the jobs queue for a worker (approximate)."""
        ...

    def check(self) -> None:
        """Raise if either queue cannot be reached (health check)."""
        ...


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str, html: str) -> None: ...

    def check(self) -> None: ...


class Identity(Protocol):
    def sign_up(self, email: str, password: str) -> str:
        """Create the user; returns its id (Cognito `sub`)."""
        ...

    def confirm(self, email: str, code: str) -> None: ...

    def resend_code(self, email: str) -> None:
        """Email a new confirmation code to an account not confirmed yet."""
        ...

    def log_in(self, email: str, password: str) -> Tokens: ...

    def verify(self, id_token: str) -> Principal:
        """The principal of a valid IdToken; NotAuthenticated otherwise."""
        ...

    def check(self) -> None: ...


class MediaUrls(Protocol):
    def url_for(self, key: str) -> str: ...

    def stream_url_for(self, master_key: str, prefix: str) -> str:
        """The master playlist's URL, signed once for every object under `prefix`
        (its playlists and segments), so relative URIs in playlists resolve."""
        ...

    def check(self) -> None: ...
