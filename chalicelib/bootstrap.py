"""The composition root: the one place that builds adapters from settings.

Both Chalice apps ask here for what they need; nothing else constructs a
boto3 client or binds a pynamodb model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from chalicelib.adapters.cdn import SignedCdnUrls, ssm_secret
from chalicelib.adapters.cognito import CognitoIdentity
from chalicelib.adapters.dynamo import DynamoVideoRepository, bind_video_record
from chalicelib.adapters.s3 import S3BlobStore
from chalicelib.adapters.ses import SesMailer
from chalicelib.services import AccountService, HealthService, VideoService
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.adapters.idempotency import IdempotentJobs
    from chalicelib.processing import UploadProcessor


@dataclass
class Container:
    """Lazily built services for one process; adapters are built on first use."""

    settings: Settings

    def client(self, service: str, **config: Any) -> Any:
        s = self.settings
        return boto3.session.Session().client(
            service,
            region_name=s.region,
            endpoint_url=s.aws_endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, **config),
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
    def videos(self) -> DynamoVideoRepository:
        return DynamoVideoRepository(bind_video_record(self.settings))

    @cached_property
    def uploads(self) -> S3BlobStore:
        return S3BlobStore(self._s3, self.settings.uploads_bucket)

    @cached_property
    def media(self) -> S3BlobStore:
        return S3BlobStore(self._s3, self.settings.media_bucket)

    @cached_property
    def media_urls(self) -> SignedCdnUrls:
        s = self.settings
        return SignedCdnUrls(
            s.media_base_url,
            s.cdn_key_pair_id,
            ssm_secret(self.client("ssm"), s.cdn_private_key_parameter),
            s.media_url_ttl_s,
        )

    @cached_property
    def mailer(self) -> SesMailer:
        return SesMailer(self.client("ses"), self.settings.mail_sender)

    @cached_property
    def identity(self) -> CognitoIdentity:
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
        return VideoService(self.videos, self.uploads, self.media, self.media_urls, self.settings)

    @cached_property
    def health(self) -> HealthService:
        return HealthService(
            self.videos, self.uploads, self.media, self.identity, self.mailer, self.media_urls
        )

    @cached_property
    def processor(self) -> UploadProcessor:
        # Imported here so the API, which ships without ffmpeg, never loads it.
        from chalicelib import media as media_module
        from chalicelib.processing import UploadProcessor

        return UploadProcessor(
            videos=self.videos,
            uploads=self.uploads,
            media=self.media,
            mailer=self.mailer,
            transcoder=media_module,
            settings=self.settings,
            watermark_path=self.settings.watermark_path or media_module.default_watermark_path(),
        )

    @cached_property
    def process_once(self) -> IdempotentJobs:
        """`processor.process` guarded by Powertools idempotency on DynamoDB,
        keyed by the uploaded object, so a duplicate delivery does nothing.
        Call as `process_once(job={"bucket", "key", "version"}, lambda_context,
        final_attempt=..., time_left_s=...)`."""
        from chalicelib.adapters.idempotency import IdempotentJobs

        processor = self.processor

        def process(job: dict[str, str], final_attempt: bool, time_left_s: float | None) -> str:
            return processor.process(job["key"], final_attempt=final_attempt, time_left_s=time_left_s)

        return IdempotentJobs(process, self.client("dynamodb"), self.settings.idempotency_table)
