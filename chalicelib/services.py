"""The API's use cases: accounts and videos.

Routes in app.py turn a request into one call here and shape the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib import telemetry
from chalicelib import usage as usage_rules
from chalicelib.domain import (
    Conflict,
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
from chalicelib.ports import BlobStore, Identity, StaleUpdate, VideoRepository
from chalicelib.settings import Settings
from chalicelib.uploads import plan_for
from chalicelib.usage import OverQuota, QuotaLimits

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from chalicelib.usage import UsageService

# A worker updating the video (its progress) between our read and delete makes us read again.
DELETE_ATTEMPTS = 5

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
    # Quotas and the errors that name them; None: no quotas (the counters still count).
    usage: UsageService | None = None
    # When a video is created (and so which day's quota it counts against).
    clock: Callable[[], datetime] = utcnow

    def create(self, owner: Principal, request: NewVideo) -> tuple[Video, UploadTicket | MultipartPlan]:
        """Record a new video and presign the upload of its file: one POST, or at
        or above the multipart threshold a multipart upload's plan
        (chalicelib.uploads). QuotaExceeded if it would take the owner over a
        quota (counted in the same write)."""
        now = self.clock()
        video_id = new_video_id()
        # From here on this request's log lines are about the new video.
        telemetry.set_correlation_id(video_id)
        video = Video(
            id=video_id,
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
        upload: UploadTicket | MultipartPlan
        if request.size_bytes >= self.settings.multipart_threshold_bytes:
            upload_id = self.uploads.start_multipart_upload(video.upload_key, video.source.content_type)
            upload = plan_for(upload_id, request.size_bytes, self.settings, now)
            video = video.with_changes(multipart=upload)
        else:
            upload = self.uploads.presign_upload(
                upload_key(video.owner_id, video.id),
                content_type=video.source.content_type,
                max_bytes=video.source.size_bytes,
                expires_s=self.settings.upload_url_ttl_s,
            )
        limits = self.usage.limits if self.usage is not None else QuotaLimits()
        try:
            self.videos.add(video, usage=usage_rules.created(video, limits))
        except Exception as error:
            if video.multipart is not None:
                # Not recorded, so nothing would ever complete or abort it.
                self.uploads.abort_multipart_uploads(video.upload_prefix)
            if not isinstance(error, OverQuota):
                raise
            assert self.usage is not None  # no limits, no refusal
            raise self.usage.quota_exceeded(owner.user_id, error.quota, video.source.size_bytes) from None
        logger.info("video %s created, awaiting its upload of %d bytes", video.id, video.source.size_bytes)
        telemetry.count("UploadsCreated")
        return video, upload

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
        for _ in range(DELETE_ATTEMPTS):
            video = self.get(owner, video_id)
            if video.multipart is not None:
                # Frees the parts S3 holds; completing it afterwards finds no upload.
                self.uploads.abort_multipart_uploads(video.upload_prefix)
            # Objects first: if that fails the record is still there to retry with.
            self.uploads.delete_prefix(video.upload_prefix)
            self.media.delete_prefix(video.media_prefix)
            try:
                # Only the video as read, so the bytes freed are the bytes counted for it
                # (a worker may be recording the upload's real size meanwhile).
                self.videos.delete(
                    video.owner_id,
                    video.id,
                    usage=usage_rules.deleted(video),
                    unchanged_since=video.updated_at,
                )
                return
            except StaleUpdate:
                continue
        raise Conflict("The video changed while it was being deleted; try again.")
