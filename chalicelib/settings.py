"""Typed settings, read once from the environment.

Every knob of the system lives here. Each stage's values come from the
environment: `.chalice/config.json` (and `workers/.chalice/config.json`) set
them per stage on AWS, and the local stack (`devstack/`) sets them for
`chalice local` and the event pump. Variable names are the field names in
upper case with the ``VIDLINE_`` prefix, e.g. ``VIDLINE_UPLOADS_BUCKET``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GIB = 1024**3
MIB = 1024**2
# S3's limits: an object, one presigned POST, one part of a multipart upload.
S3_MAX_OBJECT_BYTES = 5 * 1024**4
S3_MAX_POST_BYTES = 5 * 1000**3
S3_MIN_PART_BYTES = 5 * MIB
S3_MAX_PART_BYTES = 5 * GIB
S3_MAX_PARTS = 10_000

DEFAULT_CONTENT_TYPES = (
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
)


DEFAULT_LADDER = (1080, 720, 480, 360)
MIN_RUNG_PX = 144
MAX_RUNG_PX = 4320


class Settings(BaseSettings):
    """All of Vidline's configuration, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="VIDLINE_", frozen=True, extra="ignore")

    stage: str = "local"
    region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("VIDLINE_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    # Points every AWS client at a stand-in (moto) in local mode; None on AWS.
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("VIDLINE_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    )
    # Where presigned S3 URLs and POSTs point, when that is not where the apps'
    # own S3 calls go: in local mode the enforcing S3 front (devstack.s3front),
    # which checks signatures and POST policies before passing requests on to
    # moto. None (on AWS): presigned URLs point at S3 like every other call.
    s3_public_endpoint_url: str | None = None

    # Resources
    videos_table: str = "vidline-videos"
    idempotency_table: str = "vidline-idempotency"
    uploads_bucket: str = "vidline-uploads"
    media_bucket: str = "vidline-media"
    jobs_queue: str = "vidline-jobs"
    jobs_dlq: str = "vidline-jobs-dlq"
    # How many receives before SQS moves a job to the dead-letter queue; the
    # worker marks the video failed on the last one (unless the host was
    # stopping), and the dead-letter queue's handler fails what is left.
    job_max_receives: int = Field(default=3, ge=1, le=1000)

    # Identity
    user_pool_id: str = ""
    user_pool_client_id: str = ""
    # Needed only with auth_mode "apigateway", for the Cognito authorizer.
    user_pool_arn: str = ""
    # "app": the API verifies Cognito IdTokens itself (local mode, where
    # chalice local does not). "apigateway": API Gateway's Cognito authorizer
    # has verified them and the app reads its claims.
    auth_mode: Literal["app", "apigateway"] = "app"
    # Local mode confirms sign-ups at once; on AWS Cognito emails a code.
    auto_confirm_signups: bool = False

    # Email
    mail_sender: str = "Vidline <no-reply@vidline.example.com>"
    # Where people open a video; the "ready" email links here.
    app_url: str = "http://127.0.0.1:8080"

    # HTTP
    cors_origin: str = "*"

    # CDN: media is private and served by CloudFront (locally, its stand-in)
    # through signed URLs. A rendition's URL is f"{media_base_url}/{key}".
    media_base_url: str = "http://127.0.0.1:8080"
    # The CloudFront public key's id, and the SSM SecureString holding the
    # matching private key (PEM) that signs the URLs.
    cdn_key_pair_id: str = "local"
    cdn_private_key_parameter: str = "/vidline/local/cdn-private-key"

    # Input limits
    # Up to S3's object limit (5 TiB). 10 GiB holds the 30-minute limit at
    # 45 Mb/s, what a phone records in 4K.
    max_upload_bytes: int = Field(default=10 * GIB, gt=0, le=S3_MAX_OBJECT_BYTES)
    allowed_content_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CONTENT_TYPES
    max_title_length: int = Field(default=200, ge=1)
    max_filename_length: int = Field(default=255, ge=1)
    # A 15-minute Lambda encodes roughly 30 minutes of 1080p at veryfast.
    max_duration_s: float = Field(default=30 * 60, gt=0)
    max_dimension_px: int = Field(default=4096, gt=0)
    # The most pixels any decoded frame may have (ffmpeg's -max_pixels), checked
    # on every frame, not only the first one the probe sees. 0: max_dimension_px²
    # (16.8 MP by default, a 4096×4096 frame; a 8192×8192 stream needs ~1 GB).
    max_frame_pixels: int = Field(default=0, ge=0)
    upload_url_ttl_s: int = Field(default=900, ge=60, le=900)
    # Multipart uploads (issue 11). A file of VIDLINE_MULTIPART_THRESHOLD_BYTES
    # or more uploads in parts (resumable) instead of one presigned POST; it
    # must stay below S3's 5 GB ceiling for a POST. VIDLINE_MAX_UPLOAD_BYTES may
    # then go up to S3's object limit, 5 TiB.
    multipart_threshold_bytes: int = Field(default=64 * MIB, ge=1, lt=S3_MAX_POST_BYTES)
    # The part size a plan prefers; bigger files get bigger parts so that every
    # file fits in S3's 10,000 parts. S3 needs 5 MiB..5 GiB (the last part may be smaller).
    multipart_part_bytes: int = Field(default=8 * MIB, ge=S3_MIN_PART_BYTES, le=S3_MAX_PART_BYTES)
    # How long each presigned part PUT stays valid (clients ask for more as they go).
    multipart_part_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # How long a multipart upload may stay open before it is given up (the
    # abandoned-uploads job aborts it; the bucket's lifecycle rule aborts any
    # upload still open after 2 days, so keep this under that).
    multipart_upload_ttl_s: int = Field(default=24 * 3600, ge=300, le=36 * 3600)
    media_url_ttl_s: int = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)

    # Media pipeline
    # The HLS ladder: each rung's short side in pixels, largest first. Only
    # rungs at or below the source's short side are made (never upscaled).
    # VIDLINE_LADDER="1080,720,480,360".
    ladder: Annotated[tuple[int, ...], NoDecode] = DEFAULT_LADDER
    # The MP4's rung: the largest ladder rung at or below this (and the source).
    rendition_short_side_px: int = Field(default=720, ge=MIN_RUNG_PX, le=MAX_RUNG_PX)
    # HLS segment length; keyframes are placed so every rung cuts at the same instants.
    hls_segment_s: float = Field(default=2.0, ge=0.5, le=10.0)
    watermark_path: str = ""  # empty: the PNG that ships in chalicelib/assets
    work_dir: str = "/tmp"
    ffmpeg_timeout_s: float = Field(default=13 * 60, gt=0)
    # The ffmpeg binary; on Lambda the layer's "/opt/bin/ffmpeg". Empty: the
    # imageio-ffmpeg wheel's (local runs and tests).
    ffmpeg_path: str = ""

    # Scheduled jobs (chalicelib/housekeeping.py, workers/app.py)
    # A queued or processing video with no progress for this long has no live
    # worker: stuck-jobs requeues its upload once, then fails it after this long
    # again. Keep it above the worker Lambda's timeout (900 s), so a live
    # invocation is never taken for dead and a dead one's idempotency lock has
    # expired by then (the requeued job runs).
    stuck_job_after_s: float = Field(default=20 * 60, gt=0)
    # Local stack only: it runs every scheduled job this often (their AWS
    # schedules are minutes to a day); 0 turns the local timers off.
    local_job_interval_s: float = Field(default=60.0, ge=0)

    # Cache (chalicelib/adapters/cache): cached reads live in a store shared by
    # every process (Lambdas, chalice local), with a small in-memory layer in
    # front. "dynamodb": the cache_table, whose TTL attribute ("expires_at")
    # removes old items. "redis": redis_url, e.g. an ElastiCache endpoint that
    # the Lambdas reach in a VPC.
    cache_backend: Literal["dynamodb", "redis"] = "dynamodb"
    cache_table: str = "vidline-cache"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # How long a process keeps a value in memory before asking the store again
    # (never longer than the value's own TTL); 0 turns the in-memory layer off.
    cache_local_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    cache_local_max_entries: int = Field(default=1024, ge=1)
    # How long past its TTL a value is kept, so it can be served (stale) to
    # other callers while one of them recomputes it.
    cache_stale_s: float = Field(default=60.0, ge=0, le=24 * 3600)
    # The lease of the one caller computing a key: others wait at most this
    # long for its value, and a caller that died holds the key no longer.
    cache_lease_s: float = Field(default=5.0, gt=0, le=60)
    # Each call to the store gives up after this long (connect and read).
    cache_timeout_s: float = Field(default=0.5, gt=0, le=5)
    # After the store failed, the cache computes without it for this long,
    # so a dead store costs one timeout per process per period, not per read.
    cache_retry_after_s: float = Field(default=5.0, ge=0, le=600)

    # Health and observability (chalicelib/health.py, chalicelib/telemetry.py)
    # GET /health runs its checks in parallel and waits this long for them; a
    # check still running then is failing. Also each check's connect and read
    # timeout (its clients do not retry).
    health_check_timeout_s: float = Field(default=2.0, gt=0, le=10)
    # GET /health answers from its last run for this long, and concurrent calls
    # share one run: anyone may call it, and hammering it must not hammer every
    # dependency (0: run every time).
    health_reuse_s: float = Field(default=5.0, ge=0, le=60)
    # "json": one JSON object a line (Powertools' format, for CloudWatch Logs
    # Insights). "text": time, level, correlation id and message, for people
    # (the local stack sets this).
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Also append every log line as JSON to this file; empty: none. The local
    # stack sets .vidline/logs.jsonl, which `python -m devstack logs VIDEO_ID` reads.
    log_file: str = ""
    # "emf": metrics are printed in CloudWatch's embedded metric format (AWS).
    # "log": a log line per flush instead (local mode, where nothing reads EMF).
    metrics_output: Literal["emf", "log"] = "emf"
    # X-Ray tracing of the handlers and AWS calls (Powertools Tracer); the
    # functions need active tracing (infra). Off locally and in tests.
    tracing: bool = False

    # Usage counters and quotas (chalicelib/usage.py). The counters table holds
    # per-user and site-wide daily counters (keys `pk`, `sk`).
    usage_table: str = "vidline-usage"
    # Site-wide counters of a day are spread over this many items, written at
    # random, so no single item is hot; the daily roll-up folds them. Raise it
    # freely; lowering it hides the counters of the dropped shards' open days.
    usage_site_shards: int = Field(default=8, ge=1, le=100)
    # Per-user quotas, refused at POST /videos with 429 quota_exceeded; 0 = unlimited.
    # Videos created per UTC day.
    quota_videos_per_day: int = Field(default=0, ge=0)
    # Bytes of source files the user's videos hold (declared size until the upload is measured).
    quota_bytes_stored: int = Field(default=0, ge=0)
    # Minutes of video processed (made ready) per UTC calendar month.
    quota_minutes_per_month: int = Field(default=0, ge=0)
    # /stats and /stats/site: answers are cached this long, so today's figures may lag by it.
    stats_cache_ttl_s: int = Field(default=60, ge=0, le=3600)
    stats_default_days: int = Field(default=30, ge=1, le=366)
    stats_max_days: int = Field(default=366, ge=1, le=3660)
    # Who may read GET /stats/site: comma-separated emails (compared lower-case)
    # of signed-in users, or "*" for every signed-in user; empty: nobody.
    site_stats_readers: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("site_stats_readers", mode="before")
    @classmethod
    def _split_readers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @property
    def frame_pixel_limit(self) -> int:
        """`max_frame_pixels`, or `max_dimension_px`² when that is 0."""
        return self.max_frame_pixels or self.max_dimension_px**2

    @field_validator("allowed_content_types", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ladder", mode="before")
    @classmethod
    def _split_ladder(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().removesuffix("p") for part in value.split(",") if part.strip())
        return value

    @field_validator("ladder")
    @classmethod
    def _check_ladder(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("VIDLINE_LADDER names no rung; set it like 1080,720,480,360")
        for side in value:
            if not MIN_RUNG_PX <= side <= MAX_RUNG_PX:
                raise ValueError(
                    f"VIDLINE_LADDER: rung {side} is outside {MIN_RUNG_PX}..{MAX_RUNG_PX} pixels"
                )
            if side % 2:
                raise ValueError(f"VIDLINE_LADDER: rung {side} is odd; H.264 4:2:0 needs even sizes")
        if len(set(value)) != len(value):
            raise ValueError(f"VIDLINE_LADDER: rungs repeat in {','.join(map(str, value))}")
        # Listed largest first by convention; any order is accepted and sorted.
        return tuple(sorted(value, reverse=True))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
