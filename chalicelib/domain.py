"""The video and its rules: states, keys, ids and domain errors.

Plain Python with no AWS import, so every rule here is unit-testable.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class VideoStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


FINAL_STATUSES = frozenset({VideoStatus.READY, VideoStatus.FAILED})
# S3 checks a presigned POST's expiry when the upload starts, so one begun
# just in time may still take as long as its size needs at a slow 1 Mbit/s,
# and its event a little longer; only then is the upload given up.
SLOWEST_UPLOAD_BYTES_PER_S = 125_000
UPLOAD_EVENT_GRACE_S = 120
UPLOAD_EXPIRED_REASON = "The upload did not finish before its link expired. Upload the file again."
# States a worker may pick a video up from. PROCESSING is included so that a
# retry after a crash mid-encode carries on.
PROCESSABLE_STATUSES = frozenset({VideoStatus.AWAITING_UPLOAD, VideoStatus.QUEUED, VideoStatus.PROCESSING})


@dataclass(frozen=True)
class Principal:
    """The signed-in user a request acts for."""

    user_id: str
    email: str


@dataclass(frozen=True)
class SourceInfo:
    filename: str
    size_bytes: int
    content_type: str
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int
    key: str


@dataclass(frozen=True)
class Rung:
    """One HLS rung as the API shows it."""

    name: str  # the short side and "p": "1080p", "720p"...
    width: int
    height: int
    # Bits per second, the master playlist's BANDWIDTH: the peak (video maxrate plus audio).
    bandwidth: int


@dataclass(frozen=True)
class Outputs:
    """What a processing run stored. While a video is only playable, the MP4 is not
    there yet (`renditions` is empty) and the thumbnail may not be either."""

    renditions: tuple[Rendition, ...]  # the MP4
    thumbnail_key: str | None
    hls_master_key: str | None = None  # the media key of the run's master.m3u8
    rungs: tuple[Rung, ...] = ()

    @property
    def hls_prefix(self) -> str | None:
        """The key prefix every playlist and segment of the HLS outputs lives under:
        the master playlist's "folder", with its trailing slash."""
        if self.hls_master_key is None:
            return None
        return self.hls_master_key.rpartition("/")[0] + "/"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every media key these outputs name."""
        named = [r.key for r in self.renditions] + [self.thumbnail_key, self.hls_master_key]
        return tuple(key for key in named if key is not None)


@dataclass(frozen=True)
class MultipartPlan:
    """A resumable upload in parts (S3 multipart): its upload id and how the file
    is cut. Every part is `part_size` bytes but the last, which holds the rest."""

    upload_id: str
    part_size: int
    part_count: int
    # When the upload is given up if not completed (the abandoned-uploads job aborts it).
    expires_at: datetime

    def expected_part_size(self, part_number: int, total_bytes: int) -> int:
        """How many bytes part `part_number` (1-based) of a `total_bytes` file holds."""
        if part_number < self.part_count:
            return self.part_size
        return total_bytes - self.part_size * (self.part_count - 1)


@dataclass(frozen=True)
class UploadedPart:
    """One part S3 holds for a multipart upload."""

    part_number: int
    etag: str  # without quotes
    size_bytes: int


@dataclass(frozen=True)
class Video:
    id: str
    owner_id: str
    owner_email: str
    title: str
    status: VideoStatus
    progress: int
    created_at: datetime
    updated_at: datetime
    source: SourceInfo
    error: str | None = None
    outputs: Outputs | None = None
    # True once the HLS master playlist and the first segments of every rung are
    # stored: the video can be watched, possibly while still processing.
    playable: bool = False
    # Set once the owner has been emailed about the final status.
    notified_at: datetime | None = None
    # The ETag of the one upload the worker took for this video, recorded when
    # it left awaiting_upload. Any other object later stored under the upload
    # key is refused (one upload per ticket).
    upload_etag: str | None = None
    # When the stuck-jobs job put the video's upload back on the jobs queue;
    # a job is requeued at most once, then failed if it stays stuck.
    requeued_at: datetime | None = None
    # Set when the file uploads in parts rather than in one presigned POST.
    multipart: MultipartPlan | None = None

    @property
    def upload_key(self) -> str:
        return upload_key(self.owner_id, self.id)

    @property
    def upload_prefix(self) -> str:
        return upload_prefix(self.owner_id, self.id)

    @property
    def media_prefix(self) -> str:
        return media_prefix(self.owner_id, self.id)

    def refuses_upload(self, etag: str) -> bool:
        """True when the video already took another upload than the one with `etag`
        (an empty `etag` is unknown and not refused here)."""
        return self.upload_etag is not None and bool(etag) and etag != self.upload_etag

    def outputs_prefix(self, run_id: str) -> str:
        """Where one processing run stores its outputs. Each run writes under its
        own prefix, so a run that lost its video to another can remove what it
        wrote without touching anything the video uses."""
        return f"{self.media_prefix}{run_id}/"

    def hls_prefix(self, run_id: str) -> str:
        """Where one processing run stores its HLS playlists and segments."""
        return f"{self.outputs_prefix(run_id)}hls/"

    def uses_outputs_under(self, prefix: str) -> bool:
        """True when the video's recorded outputs include a key under `prefix`."""
        if self.outputs is None:
            return False
        return any(key.startswith(prefix) for key in self.outputs.keys)

    def upload_expired(self, now: datetime, upload_ttl_s: int) -> bool:
        """True when the video still waits for an upload that can no longer arrive:
        its presigned POST can no longer send it, or its multipart upload's window
        (`multipart.expires_at`, which `upload_ttl_s` does not shorten) is over."""
        if self.multipart is not None:
            # Completing is one call that answers at once; the event follows soon after.
            deadline = self.multipart.expires_at + timedelta(seconds=UPLOAD_EVENT_GRACE_S)
        else:
            transfer_s = self.source.size_bytes / SLOWEST_UPLOAD_BYTES_PER_S
            deadline = self.created_at + timedelta(seconds=upload_ttl_s + transfer_s + UPLOAD_EVENT_GRACE_S)
        return self.status is VideoStatus.AWAITING_UPLOAD and now > deadline

    def with_changes(self, **changes: Any) -> Video:
        return replace(self, **changes)


@dataclass(frozen=True)
class NewVideo:
    """What a client declares when it creates a video (validated at the API's edge)."""

    title: str
    filename: str
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class UploadTicket:
    """A presigned POST the browser sends the file with."""

    url: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int


@dataclass(frozen=True)
class Page:
    items: list[Video]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_in: int


# --- errors: each maps to one HTTP status and one JSON shape in app.py ---


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(DomainError):
    code = "invalid_request"


class NotAuthenticated(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class NotConfirmed(Forbidden):
    """The account exists but its email is not confirmed yet: the client should ask for the code."""

    code = "not_confirmed"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class RateLimited(DomainError):
    code = "rate_limited"


class ServiceUnavailable(DomainError):
    code = "service_unavailable"


# --- ids and keys ---

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
VIDEO_ID_PATTERN = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")
_UPLOAD_KEY = re.compile(r"^uploads/(?P<owner>[^/]+)/(?P<video>[^/]+)/source$")


def new_video_id(now_ms: int | None = None) -> str:
    """A ULID-like id: 48 bits of milliseconds then 80 random bits, in
    lower-case Crockford base32, so ids sort by creation time."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_video_id(value: str) -> bool:
    return bool(VIDEO_ID_PATTERN.match(value))


def upload_prefix(owner_id: str, video_id: str) -> str:
    return f"uploads/{owner_id}/{video_id}/"


def upload_key(owner_id: str, video_id: str) -> str:
    return f"{upload_prefix(owner_id, video_id)}source"


def media_prefix(owner_id: str, video_id: str) -> str:
    return f"media/{owner_id}/{video_id}/"


def parse_upload_key(key: str) -> tuple[str, str] | None:
    """(owner_id, video_id) of an upload key, or None if it is not one."""
    match = _UPLOAD_KEY.match(key)
    if not match:
        return None
    return match["owner"], match["video"]


def utcnow() -> datetime:
    return datetime.now(UTC)
