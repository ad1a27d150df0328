"""The API's use cases: accounts and videos.

Routes in app.py turn a request into one call here and shape the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.domain import (
    MultipartPlan,
    NewVideo,
    NotAuthenticated,
    NotFound,
    Page,
    Principal,
    SourceInfo,
    Tokens,
    UploadTicket,
    Video,
    VideoStatus,
    is_video_id,
    new_video_id,
    upload_key,
    utcnow,
)
from chalicelib.ports import BlobStore, Identity, Mailer, MediaUrls, VideoRepository
from chalicelib.settings import Settings
from chalicelib.uploads import plan_for

logger = logging.getLogger(__name__)


@dataclass
class AccountService:
    identity: Identity
    settings: Settings

    def sign_up(self, email: str, password: str) -> tuple[str, bool]:
        """Create an account; returns (user id, whether it is already confirmed)."""
        user_id = self.identity.sign_up(email, password)
        return user_id, self.settings.auto_confirm_signups

    def confirm(self, email: str, code: str) -> None:
        """Confirm an account with the emailed code (alike for unknown and confirmed accounts)."""
        self.identity.confirm(email, code)

    def resend_code(self, email: str) -> None:
        """Email a new confirmation code (the first may be lost or expired).

        Answers alike whether or not the account exists or waits for a code.
        """
        self.identity.resend_code(email)

    def log_in(self, email: str, password: str) -> Tokens:
        """Tokens for a right email and password."""
        return self.identity.log_in(email, password)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise NotAuthenticated("Sign in first: the Authorization header is missing.")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("The Authorization header must be 'Bearer <id token>'.")
        return self.identity.verify(token.strip())


@dataclass
class VideoService:
    videos: VideoRepository
    uploads: BlobStore
    media: BlobStore
    settings: Settings

    def create(self, owner: Principal, request: NewVideo) -> tuple[Video, UploadTicket | MultipartPlan]:
        """Record a new video and presign the upload of its file: one POST, or at
        or above the multipart threshold a multipart upload's plan (chalicelib.uploads)."""
        now = utcnow()
        video = Video(
            id=new_video_id(),
            owner_id=owner.user_id,
            owner_email=owner.email,
            title=request.title,
            status=VideoStatus.AWAITING_UPLOAD,
            progress=0,
            created_at=now,
            updated_at=now,
            source=SourceInfo(
                filename=request.filename,
                size_bytes=request.size_bytes,
                content_type=request.content_type,
            ),
        )
        if request.size_bytes >= self.settings.multipart_threshold_bytes:
            upload_id = self.uploads.start_multipart_upload(video.upload_key, video.source.content_type)
            plan = plan_for(upload_id, request.size_bytes, self.settings, now)
            video = video.with_changes(multipart=plan)
            self.videos.add(video)
            return video, plan
        ticket = self.uploads.presign_upload(
            upload_key(video.owner_id, video.id),
            content_type=video.source.content_type,
            max_bytes=video.source.size_bytes,
            expires_s=self.settings.upload_url_ttl_s,
        )
        self.videos.add(video)
        return video, ticket

    def list(self, owner: Principal, limit: int, cursor: str | None) -> Page:
        """One page of the owner's videos, newest first."""
        return self.videos.list_for_owner(owner.user_id, limit, cursor)

    def get(self, owner: Principal, video_id: str) -> Video:
        """The owner's video; NotFound for anyone else's, so ids reveal nothing."""
        video = self.videos.get(owner.user_id, video_id) if is_video_id(video_id) else None
        if video is None:
            raise NotFound("No such video.")
        return video

    def delete(self, owner: Principal, video_id: str) -> None:
        """Delete the record and every object stored for it."""
        video = self.get(owner, video_id)
        if video.multipart is not None:
            # Frees the parts S3 holds; completing it afterwards finds no upload.
            self.uploads.abort_multipart_uploads(video.upload_prefix)
        # Objects first: if that fails the record is still there to retry with.
        self.uploads.delete_prefix(video.upload_prefix)
        self.media.delete_prefix(video.media_prefix)
        self.videos.delete(video.owner_id, video.id)


@dataclass
class HealthService:
    """Checks every dependency the API needs."""

    videos: VideoRepository
    uploads: BlobStore
    media: BlobStore
    identity: Identity
    mailer: Mailer
    media_urls: MediaUrls

    def run(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        for name, check in (
            ("database", self.videos.check),
            ("uploads_bucket", self.uploads.check),
            ("media_bucket", self.media.check),
            ("identity", self.identity.check),
            ("email", self.mailer.check),
            ("cdn_signing_key", self.media_urls.check),
        ):
            try:
                check()
                checks[name] = "ok"
            except Exception:
                # The details (which may name accounts and roles) go to the log only.
                logger.warning("health check %s is failing", name, exc_info=True)
                checks[name] = "failing"
        return checks
