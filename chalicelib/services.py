"""The API's use cases: accounts and videos.

Routes in app.py turn a request into one call here and shape the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib import schemas
from chalicelib.domain import (
    UPLOAD_EXPIRED_REASON,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    Outputs,
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

logger = logging.getLogger(__name__)


def parse[M: BaseModel](model: type[M], data: Any, settings: Settings) -> M:
    """Validate request data, turning pydantic's errors into InvalidRequest."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data, context={"settings": settings})
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or None,
                "problem": error["msg"].removeprefix("Value error, "),
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(
            f"{d['field']}: {d['problem']}" if d["field"] else f"{d['problem']}" for d in details
        )
        raise InvalidRequest(f"Invalid request: {summary}", details) from None


@dataclass
class AccountService:
    identity: Identity
    settings: Settings

    def sign_up(self, request: schemas.SignupRequest) -> tuple[str, bool]:
        """Create an account; returns (user id, whether it is already confirmed)."""
        user_id = self.identity.sign_up(request.email, request.password)
        return user_id, self.settings.auto_confirm_signups

    def confirm(self, request: schemas.ConfirmRequest) -> None:
        """Confirm an account with the emailed code (alike for unknown and confirmed accounts)."""
        self.identity.confirm(request.email, request.code)

    def resend_code(self, request: schemas.ResendCodeRequest) -> None:
        """Email a new confirmation code (the first may be lost or expired).

        Answers alike whether or not the account exists or waits for a code.
        """
        self.identity.resend_code(request.email)

    def log_in(self, request: schemas.LoginRequest) -> Tokens:
        """Tokens for a right email and password."""
        return self.identity.log_in(request.email, request.password)

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
    media_urls: MediaUrls
    settings: Settings

    def create(self, owner: Principal, request: schemas.CreateVideoRequest) -> tuple[Video, UploadTicket]:
        """Record a new video and presign the upload of its file."""
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
        ticket = self.uploads.presign_upload(
            upload_key(video.owner_id, video.id),
            content_type=video.source.content_type,
            max_bytes=video.source.size_bytes,
            expires_s=self.settings.upload_url_ttl_s,
        )
        self.videos.add(video)
        return video, ticket

    def list(self, owner: Principal, query: schemas.ListVideosQuery) -> Page:
        return self.videos.list_for_owner(owner.user_id, query.limit, query.cursor)

    def get(self, owner: Principal, video_id: str) -> Video:
        """The owner's video; NotFound for anyone else's, so ids reveal nothing."""
        video = self.videos.get(owner.user_id, video_id) if is_video_id(video_id) else None
        if video is None:
            raise NotFound("No such video.")
        return video

    def delete(self, owner: Principal, video_id: str) -> None:
        """Delete the record and every object stored for it."""
        video = self.get(owner, video_id)
        # Objects first: if that fails the record is still there to retry with.
        self.uploads.delete_prefix(video.upload_prefix)
        self.media.delete_prefix(video.media_prefix)
        self.videos.delete(video.owner_id, video.id)

    def present(self, video: Video) -> schemas.VideoOut:
        """The public view of a video, with URLs to its outputs."""
        outputs = None
        if video.outputs is not None and (video.status is VideoStatus.READY or video.playable):
            outputs = self._present_outputs(video.outputs)
        source = video.source
        status, error = video.status, video.error
        if video.upload_expired(utcnow(), self.settings.upload_url_ttl_s):
            # Nothing will arrive any more: final for the client, which stops waiting.
            status, error = VideoStatus.FAILED, UPLOAD_EXPIRED_REASON
        return schemas.VideoOut(
            id=video.id,
            title=video.title,
            status=status.value,
            progress=video.progress,
            error=error,
            created_at=video.created_at,
            updated_at=video.updated_at,
            source=schemas.SourceOut(
                filename=source.filename,
                size_bytes=source.size_bytes,
                duration_s=source.duration_s,
                width=source.width,
                height=source.height,
            ),
            playable=video.playable,
            outputs=outputs,
        )

    def _present_outputs(self, outputs: Outputs) -> schemas.OutputsOut:
        """Signed URLs for what a run stored: the MP4 and thumbnail one by one, the
        HLS stream with one signature for every object under its prefix."""
        hls_url = None
        if outputs.hls_master_key is not None and outputs.hls_prefix is not None:
            hls_url = self.media_urls.stream_url_for(outputs.hls_master_key, outputs.hls_prefix)
        return schemas.OutputsOut(
            renditions=[
                schemas.RenditionOut(
                    name=r.name, width=r.width, height=r.height, url=self.media_urls.url_for(r.key)
                )
                for r in outputs.renditions
            ],
            hls_url=hls_url,
            rungs=[
                schemas.RungOut(name=r.name, width=r.width, height=r.height, bandwidth=r.bandwidth)
                for r in outputs.rungs
            ],
            thumbnail_url=self.media_urls.url_for(outputs.thumbnail_key) if outputs.thumbnail_key else None,
        )


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
