"""Request and response shapes of the REST API.

Requests are validated with these models and `/openapi.json` is generated
from the same models, so the document cannot drift from the code. Limits
that are settings (sizes, types, lengths) are checked against the
`Settings` passed in the validation context.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from chalicelib.settings import S3_MAX_PARTS, Settings
from chalicelib.uploads import MAX_PART_URLS_PER_REQUEST


def _settings(info: ValidationInfo) -> Settings:
    context = info.context or {}
    settings = context.get("settings")
    if not isinstance(settings, Settings):
        raise RuntimeError("validate requests with context={'settings': ...}")
    return settings


def _printable(value: str, what: str) -> str:
    value = value.strip()
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError(f"{what} must not contain control characters or lone surrogates")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


class Request(BaseModel):
    """A JSON request body.

    Strict: a JSON value must already have the field's type. pydantic's lax
    mode would read `true` as 1 and `"5"` or `5.0` as 5 for an integer, so a
    careless client's `size_bytes: true` became a 1-byte upload.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class AccountRequest(Request):
    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)

    @field_validator("email")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        # One account per address, however it is typed.
        return value.strip().lower()


class SignupRequest(AccountRequest):
    password: str = Field(min_length=8, max_length=256)


class LoginRequest(AccountRequest):
    password: str = Field(min_length=1, max_length=256)


class ResendCodeRequest(AccountRequest):
    pass


class ConfirmRequest(AccountRequest):
    code: str = Field(min_length=1, max_length=64)


class CreateVideoRequest(Request):
    title: str = Field(description="Shown to people; at most VIDLINE_MAX_TITLE_LENGTH characters")
    filename: str = Field(description="The file's name on the user's machine")
    content_type: str = Field(description="One of VIDLINE_ALLOWED_CONTENT_TYPES")
    size_bytes: int = Field(gt=0, description="Exact size of the file; at most VIDLINE_MAX_UPLOAD_BYTES")

    @field_validator("title", "filename")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or "value"
        value = _printable(value, name)
        settings = _settings(info)
        limit = settings.max_title_length if name == "title" else settings.max_filename_length
        if len(value) > limit:
            raise ValueError(f"{name} must be at most {limit} characters")
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str, info: ValidationInfo) -> str:
        allowed = _settings(info).allowed_content_types
        normalized = value.strip().lower()
        if normalized not in allowed:
            raise ValueError(f"content_type must be one of: {', '.join(allowed)}")
        return normalized

    @field_validator("size_bytes")
    @classmethod
    def _size(cls, value: int, info: ValidationInfo) -> int:
        limit = _settings(info).max_upload_bytes
        if value > limit:
            raise ValueError(f"size_bytes must be at most {limit} bytes")
        return value


_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


class ListVideosQuery(BaseModel):
    # Other query parameters (cache busters and the like) are ignored.
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)

    @field_validator("limit", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        # A query string's values are strings: take plain digits only, not the
        # "+5", " 5", "5.0" or "1_0" that int() and lax pydantic would accept.
        if isinstance(value, str):
            if not _WHOLE_NUMBER.fullmatch(value):
                raise ValueError("limit must be a whole number from 1 to 100")
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("limit must be a whole number from 1 to 100")
        return value


# --- responses ---


class UserOut(BaseModel):
    id: str
    email: str


class SignupResponse(BaseModel):
    user: UserOut
    confirmed: bool


class TokensOut(BaseModel):
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_in: int


class SourceOut(BaseModel):
    filename: str
    size_bytes: int
    duration_s: float | None
    width: int | None
    height: int | None


class RenditionOut(BaseModel):
    name: str
    width: int
    height: int
    url: str


class RungOut(BaseModel):
    """One rung of the HLS ladder the master playlist offers."""

    name: str = Field(description='The short side and "p", e.g. "720p".')
    width: int
    height: int
    bandwidth: int = Field(description="Peak bits per second (video and audio), the playlist's BANDWIDTH.")


class OutputsOut(BaseModel):
    renditions: list[RenditionOut] = Field(
        description="The MP4, for download and players with neither MSE nor native HLS; "
        "empty while the video is playable but still processing."
    )
    hls_url: str | None = Field(
        description="The HLS master playlist, signed for every playlist and segment under it; "
        "null for videos made before adaptive streaming."
    )
    rungs: list[RungOut] = Field(description="The ladder's rungs, largest first.")
    thumbnail_url: str | None = Field(description="A JPEG; null until it is stored.")


class VideoOut(BaseModel):
    id: str
    title: str
    status: Literal["awaiting_upload", "queued", "processing", "ready", "failed"]
    progress: int = Field(ge=0, le=100)
    error: str | None
    created_at: datetime
    updated_at: datetime
    source: SourceOut | None
    playable: bool = Field(description='True once it can be watched (HLS), possibly before "ready".')
    outputs: OutputsOut | None = Field(description="Present once the video is ready or playable.")


class UploadOut(BaseModel):
    """A presigned POST: send every field of `fields`, then the file as the part named `file`."""

    method: Literal["post"] = "post"
    url: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int


class MultipartUploadOut(BaseModel):
    """A multipart upload's plan: ask for part URLs, PUT each part, complete."""

    method: Literal["multipart"] = "multipart"
    upload_id: str
    part_size: int = Field(description="Bytes in every part but the last, which holds the rest.")
    part_count: int
    expires_at: datetime = Field(description="Complete the upload before this, or it is given up.")


class CreateVideoResponse(BaseModel):
    video: VideoOut
    upload: UploadOut | MultipartUploadOut = Field(
        discriminator="method",
        description='A presigned POST ("post"), or at or above VIDLINE_MULTIPART_THRESHOLD_BYTES '
        'a multipart upload\'s plan ("multipart").',
    )


class PartUrlsRequest(Request):
    part_numbers: list[int] = Field(
        min_length=1,
        max_length=MAX_PART_URLS_PER_REQUEST,
        description=f"Which parts to presign PUTs for, 1..part_count; at most {MAX_PART_URLS_PER_REQUEST}.",
    )


class PartUrlOut(BaseModel):
    part_number: int
    url: str = Field(
        description="A presigned PUT of the part's bytes; its response's ETag header is the part's."
    )
    expires_at: datetime


class PartUrlsOut(BaseModel):
    parts: list[PartUrlOut]


class StoredPartOut(BaseModel):
    part_number: int
    etag: str
    size: int


class MultipartStatusOut(BaseModel):
    upload_id: str
    part_size: int
    part_count: int
    expires_at: datetime
    parts: list[StoredPartOut] = Field(description="The parts S3 already holds, by part number.")


class CompletedPartIn(Request):
    part_number: int = Field(ge=1, le=S3_MAX_PARTS)
    etag: str = Field(min_length=1, max_length=100)


class CompleteUploadRequest(Request):
    parts: list[CompletedPartIn] = Field(min_length=1, max_length=S3_MAX_PARTS)


class VideoListOut(BaseModel):
    items: list[VideoOut]
    next_cursor: str | None


class HealthQuery(BaseModel):
    # deep=false: liveness only, no dependency is touched.
    deep: bool = Field(default=True, description="false: answer liveness without checking any dependency")


class HealthOut(BaseModel):
    status: Literal["ok", "failing"]
    checks: dict[str, str] = Field(description='Each dependency: "ok" or "failing"; empty when deep=false.')
    failing: list[str] = Field(default=[], description="The names of the failing checks.")
    dead_letters: int | None = Field(
        default=None, description="Upload jobs waiting in the dead-letter queue (a warning, not a failure)."
    )
    warnings: list[str] = Field(default=[], description="What someone should look at; not failures.")


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# No usage is older than this; it also keeps date arithmetic far from year 1.
FIRST_STATS_DAY = dt.date(2000, 1, 1)


class StatsQuery(BaseModel):
    """GET /stats and /stats/site: an inclusive range of UTC days."""

    first: dt.date | None = Field(
        default=None, alias="from", description="First day, YYYY-MM-DD (UTC); default: 29 days before `to`"
    )
    last: dt.date | None = Field(
        default=None, alias="to", description="Last day, YYYY-MM-DD (UTC); default: today"
    )

    @field_validator("first", "last", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _ISO_DAY.fullmatch(value):
            raise ValueError("must be a date written YYYY-MM-DD")
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a date in the calendar") from None
        if day < FIRST_STATS_DAY:
            raise ValueError(f"must be {FIRST_STATS_DAY.isoformat()} or later")
        return day


class DayOut(BaseModel):
    date: dt.date
    videos_created: int
    videos_ready: int
    videos_failed: int
    minutes_processed: float = Field(description="Minutes of video made ready that day.")
    bytes_stored: int = Field(
        description="Bytes of source files stored at the end of the day (declared until the upload lands)."
    )


class QuotaOut(BaseModel):
    limit: int | None = Field(description="null: unlimited")
    used: int | float
    resets_at: dt.datetime | None = Field(description="null for bytes_stored: deleting videos frees it")


class StatsOut(BaseModel):
    days: list[DayOut] = Field(
        description="Every day of the range, oldest first, zeros where nothing happened."
    )
    quotas: dict[str, QuotaOut] = Field(
        description="videos_per_day, bytes_stored, minutes_per_month (yours); empty site-wide."
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorOut(BaseModel):
    error: ErrorBody
