"""The composition root: the one place that builds adapters from settings.

Both Chalice apps ask here for what they need; nothing else constructs a
boto3 client or binds a pynamodb model. Tests plug in fakes the same way:
`Container(settings, videos=FakeVideoRepository(), transcoder=...)`.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from chalicelib.adapters.cdn import SignedCdnUrls, ssm_secret
from chalicelib.adapters.cognito import CognitoIdentity
from chalicelib.adapters.dynamo import DynamoVideoRepository, bind_video_record
from chalicelib.adapters.s3 import S3BlobStore
from chalicelib.adapters.ses import SesMailer
from chalicelib.adapters.sqs import SqsJobQueue
from chalicelib.health import HealthService
from chalicelib.ports import BlobStore, Identity, JobQueue, Mailer, MediaUrls, VideoRepository
from chalicelib.services import AccountService, VideoService
from chalicelib.settings import Settings
from chalicelib.uploads import MultipartUploads

if TYPE_CHECKING:
    from chalicelib.adapters.idempotency import IdempotentJobs
    from chalicelib.adapters.usage_dynamo import DynamoUsageRepository
    from chalicelib.housekeeping import Housekeeping
    from chalicelib.ports import Cache, Transcoder, UsageRepository
    from chalicelib.processing import UploadProcessor
    from chalicelib.usage import UsageService


class Container:
    """The ports and services of one process.

    A port passed in is used as given; every other one is built from
    `settings` on first use, so a process only builds what it touches.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        videos: VideoRepository | None = None,
        uploads: BlobStore | None = None,
        media: BlobStore | None = None,
        mailer: Mailer | None = None,
        identity: Identity | None = None,
        media_urls: MediaUrls | None = None,
        transcoder: Transcoder | None = None,
        jobs: JobQueue | None = None,
        cache: Cache | None = None,
        usage: UsageRepository | None = None,
    ) -> None:
        self.settings = settings
        given: dict[str, object] = {
            "videos": videos,
            "uploads": uploads,
            "media": media,
            "mailer": mailer,
            "identity": identity,
            "media_urls": media_urls,
            "transcoder": transcoder,
            "jobs": jobs,
            "cache": cache,
            "usage": usage,
        }
        # The ports passed in: health checks use them as given.
        self._given = frozenset(name for name, port in given.items() if port is not None)
        # A cached_property keeps its value in the instance's __dict__: a port
        # passed in is one that is already built.
        self.__dict__.update({name: port for name, port in given.items() if port is not None})

    def client(self, service: str, *, endpoint_url: str | None = None, **config: Any) -> Any:
        """A new boto3 client for `service` in the configured region and
        endpoint (or `endpoint_url`), with standard retries; `config` adds
        botocore options (`retries=` replaces the standard ones)."""
        s = self.settings
        config.setdefault("retries", {"mode": "standard", "total_max_attempts": 3})
        return boto3.session.Session().client(
            service,
            region_name=s.region,
            endpoint_url=endpoint_url or s.aws_endpoint_url,
            config=Config(**config),
        )

    @cached_property
    def _s3(self) -> Any:
        # SigV4 for presigned POSTs. Path-style addressing for a local
        # endpoint; on AWS the bucket's regional virtual host, because the
        # global one answers a new bucket outside us-east-1 with redirects
        # for up to a day, and a browser's CORS preflight does not follow them.
        addressing = "path" if self.settings.aws_endpoint_url else "virtual"
        return self.client("s3", signature_version="s3v4", s3={"addressing_style": addressing})

    @cached_property
    def _s3_presigner(self) -> Any:
        # Signs what others send to S3 (presigned POSTs, part PUTs, GETs). In
        # local mode they go to the enforcing front, not to moto directly.
        public = self.settings.s3_public_endpoint_url
        if public is None:
            return self._s3
        return self.client(
            "s3", endpoint_url=public, signature_version="s3v4", s3={"addressing_style": "path"}
        )

    @cached_property
    def videos(self) -> VideoRepository:
        # Counted writes (usage=) go to the counters table in the same transaction.
        return DynamoVideoRepository(bind_video_record(self.settings), usage=self._usage_counters)

    @cached_property
    def _usage_counters(self) -> DynamoUsageRepository:
        from chalicelib.adapters.usage_dynamo import DynamoUsageRepository, bind_usage_record

        return DynamoUsageRepository(bind_usage_record(self.settings), self.settings.usage_site_shards)

    @cached_property
    def usage(self) -> UsageRepository:
        return self._usage_counters

    @cached_property
    def usage_service(self) -> UsageService:
        """Stats (through the cache), quota errors and the roll-up."""
        from chalicelib.usage import UsageService

        return UsageService(self.usage, self.cache, self.settings)

    @cached_property
    def uploads(self) -> BlobStore:
        return S3BlobStore(self._s3, self.settings.uploads_bucket, presigner=self._s3_presigner)

    @cached_property
    def media(self) -> BlobStore:
        return S3BlobStore(self._s3, self.settings.media_bucket, presigner=self._s3_presigner)

    @cached_property
    def media_urls(self) -> MediaUrls:
        s = self.settings
        return SignedCdnUrls(
            s.media_base_url,
            s.cdn_key_pair_id,
            ssm_secret(self.client("ssm"), s.cdn_private_key_parameter),
            s.media_url_ttl_s,
        )

    @cached_property
    def jobs(self) -> JobQueue:
        s = self.settings
        return SqsJobQueue(self.client("sqs"), s.jobs_queue, s.jobs_dlq, s.region)

    @cached_property
    def cache(self) -> Cache:
        """The cache on the configured store (VIDLINE_CACHE_BACKEND), imported on
        first use so only a process that caches loads it."""
        from chalicelib.adapters.cache import build_cache

        return build_cache(self.settings, self.cache_dynamodb_client)

    def cache_dynamodb_client(self) -> Any:
        """A DynamoDB client for the cache: VIDLINE_CACHE_TIMEOUT_S to connect and
        to read, and no retries, so a dead store cannot hold up a request."""
        timeout_s = self.settings.cache_timeout_s
        return self.client(
            "dynamodb",
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"mode": "standard", "total_max_attempts": 1},
        )

    @cached_property
    def mailer(self) -> Mailer:
        return SesMailer(self.client("ses"), self.settings.mail_sender)

    @cached_property
    def identity(self) -> Identity:
        s = self.settings
        return CognitoIdentity(
            self.client("cognito-idp"),
            user_pool_id=s.user_pool_id,
            client_id=s.user_pool_client_id,
            region=s.region,
            auto_confirm=s.auto_confirm_signups,
            endpoint_url=s.aws_endpoint_url,
        )

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.identity, self.settings)

    @cached_property
    def video_service(self) -> VideoService:
        return VideoService(self.videos, self.uploads, self.media, self.settings, usage=self.usage_service)

    @cached_property
    def multipart_uploads(self) -> MultipartUploads:
        return MultipartUploads(self.videos, self.uploads, self.settings, self.video_service.get)

    @cached_property
    def health(self) -> HealthService:
        """Health checks on ports of their own whose clients give up quickly
        (connect and read timeouts of `health_check_timeout_s`, no retries), so
        a hung dependency cannot keep a check's thread for long; a port passed
        in to the container is checked as given."""
        s = self.settings
        timeout = s.health_check_timeout_s

        def client(service: str, **config: Any) -> Any:
            return self.client(
                service,
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"mode": "standard", "total_max_attempts": 1},
                **config,
            )

        def given_or(name: str, build: Any) -> Any:
            return getattr(self, name) if name in self._given else build()

        def s3() -> Any:
            addressing = "path" if s.aws_endpoint_url else "virtual"
            return client("s3", signature_version="s3v4", s3={"addressing_style": addressing})

        return HealthService(
            videos=given_or("videos", lambda: DynamoVideoRepository(bind_video_record(s, timeout_s=timeout))),
            uploads=given_or("uploads", lambda: S3BlobStore(s3(), s.uploads_bucket)),
            media=given_or("media", lambda: S3BlobStore(s3(), s.media_bucket)),
            jobs=given_or("jobs", lambda: SqsJobQueue(client("sqs"), s.jobs_queue, s.jobs_dlq, s.region)),
            # The cache's own client already gives up quickly (cache_timeout_s).
            cache=self.cache,
            identity=given_or(
                "identity",
                lambda: CognitoIdentity(
                    client("cognito-idp"),
                    user_pool_id=s.user_pool_id,
                    client_id=s.user_pool_client_id,
                    region=s.region,
                    auto_confirm=s.auto_confirm_signups,
                    endpoint_url=s.aws_endpoint_url,
                ),
            ),
            mailer=given_or("mailer", lambda: SesMailer(client("ses"), s.mail_sender)),
            media_urls=given_or(
                "media_urls",
                lambda: SignedCdnUrls(
                    s.media_base_url,
                    s.cdn_key_pair_id,
                    ssm_secret(client("ssm"), s.cdn_private_key_parameter),
                    s.media_url_ttl_s,
                ),
            ),
            timeout_s=timeout,
            reuse_s=s.health_reuse_s,
        )

    @cached_property
    def transcoder(self) -> Transcoder:
        """ffmpeg (chalicelib.media), imported on first use so the API, which
        ships without ffmpeg, never loads it."""
        from chalicelib.media import FfmpegTranscoder, default_watermark_path, find_ffmpeg

        return FfmpegTranscoder(
            find_ffmpeg(self.settings.ffmpeg_path),
            self.settings.watermark_path or default_watermark_path(),
        )

    @cached_property
    def processor(self) -> UploadProcessor:
        from chalicelib.processing import UploadProcessor

        return UploadProcessor(
            videos=self.videos,
            uploads=self.uploads,
            media=self.media,
            mailer=self.mailer,
            transcoder=self.transcoder,
            settings=self.settings,
        )

    @cached_property
    def housekeeping(self) -> Housekeeping:
        """The scheduled jobs' service functions (workers/app.py)."""
        from chalicelib.housekeeping import Housekeeping, NoTranscoder
        from chalicelib.processing import UploadProcessor

        # The jobs fail videos and email owners through the processor, but never
        # encode: the scheduled functions carry no ffmpeg, so none is looked for.
        processor = UploadProcessor(
            videos=self.videos,
            uploads=self.uploads,
            media=self.media,
            mailer=self.mailer,
            transcoder=NoTranscoder(),
            settings=self.settings,
        )
        return Housekeeping(
            videos=self.videos,
            uploads=self.uploads,
            jobs=self.jobs,
            processor=processor,
            settings=self.settings,
        )

    @cached_property
    def process_once(self) -> IdempotentJobs:
        """`processor.process` guarded by Powertools idempotency on DynamoDB,
        keyed by the uploaded object, so a duplicate delivery does nothing.
        Call as `process_once(job=UploadedObject.as_job(), lambda_context,
        final_attempt=..., time_left_s=...)`."""
        from chalicelib.adapters.idempotency import IdempotentJobs
        from chalicelib.processing import UploadedObject

        processor = self.processor

        def process(job: dict[str, str], final_attempt: bool, time_left_s: float | None) -> str:
            uploaded = UploadedObject.from_job(job)
            return processor.process(uploaded, final_attempt=final_attempt, time_left_s=time_left_s)

        return IdempotentJobs(process, self.client("dynamodb"), self.settings.idempotency_table)
