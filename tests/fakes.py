"""Small in-memory stand-ins for the provider interfaces, for unit tests."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from chalicelib.adapters.dynamo import decode_cursor, encode_cursor
from chalicelib.bootstrap import Container
from chalicelib.domain import (
    NotAuthenticated,
    Page,
    Principal,
    Tokens,
    UploadTicket,
    Video,
    VideoStatus,
    utcnow,
)
from chalicelib.media import EncodeResult, MediaInfo, MediaRejected
from chalicelib.ports import ObjectChanged, StaleUpdate, StoredObject
from chalicelib.settings import Settings


class FakeVideoRepository:
    """Behaves as DynamoVideoRepository does: tests/contract holds both to one suite."""

    def __init__(self) -> None:
        self.videos: dict[tuple[str, str], Video] = {}

    def add(self, video: Video) -> None:
        if (video.owner_id, video.id) in self.videos:
            raise RuntimeError(f"could not store video {video.id}")
        self.videos[(video.owner_id, video.id)] = video

    def get(self, owner_id: str, video_id: str) -> Video | None:
        return self.videos.get((owner_id, video_id))

    def list_for_owner(self, owner_id: str, limit: int, cursor: str | None) -> Page:
        mine = sorted(
            (v for (o, _), v in self.videos.items() if o == owner_id), key=lambda v: v.id, reverse=True
        )
        if cursor:
            after = decode_cursor(cursor)
            mine = [v for v in mine if v.id < after]
        page = mine[:limit]
        return Page(items=page, next_cursor=encode_cursor(page[-1].id) if len(mine) > limit else None)

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        current = self.videos.get((video.owner_id, video.id))
        if current is None or (expected is not None and current.status not in set(expected)):
            raise StaleUpdate(video.id)
        updated = current.with_changes(updated_at=utcnow(), **changes)
        self.videos[(video.owner_id, video.id)] = updated
        return updated

    def claim_notification(self, video: Video) -> bool:
        current = self.videos.get((video.owner_id, video.id))
        if current is None or current.notified_at is not None:
            return False
        self.videos[(video.owner_id, video.id)] = current.with_changes(notified_at=utcnow())
        return True

    def release_notification(self, video: Video) -> None:
        current = self.videos.get((video.owner_id, video.id))
        if current is not None:
            self.videos[(video.owner_id, video.id)] = current.with_changes(notified_at=None)

    def delete(self, owner_id: str, video_id: str) -> None:
        self.videos.pop((owner_id, video_id), None)

    def check(self) -> None:
        pass


@dataclass
class FakeBlobStore:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    presigned: list[dict[str, Any]] = field(default_factory=list)

    def presign_upload(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> UploadTicket:
        self.presigned.append(
            {"key": key, "content_type": content_type, "max_bytes": max_bytes, "expires_s": expires_s}
        )
        return UploadTicket(
            url="https://uploads.example",
            fields={"key": key},
            expires_at=utcnow() + timedelta(seconds=expires_s),
            max_bytes=max_bytes,
        )

    def head(self, key: str) -> StoredObject | None:
        if key not in self.objects:
            return None
        data, content_type = self.objects[key]
        return StoredObject(
            key=key, size_bytes=len(data), content_type=content_type, etag=hashlib.md5(data).hexdigest()
        )

    def download(self, key: str, path: str, *, if_match: str | None = None) -> None:
        stored = self.head(key)
        if if_match is not None and (stored is None or stored.etag != if_match):
            raise ObjectChanged(key)
        Path(path).write_bytes(self.objects[key][0])

    def upload(self, path: str, key: str, content_type: str) -> None:
        self.objects[key] = (Path(path).read_bytes(), content_type)

    def delete_prefix(self, prefix: str) -> None:
        for key in [k for k in self.objects if k.startswith(prefix)]:
            del self.objects[key]

    def check(self) -> None:
        pass


@dataclass
class FakeMailer:
    sent: list[dict[str, str]] = field(default_factory=list)
    failures_left: int = 0

    def send(self, to: str, subject: str, text: str, html: str) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("mail service unreachable")
        self.sent.append({"to": to, "subject": subject, "text": text, "html": html})

    def check(self) -> None:
        pass


@dataclass
class FakeTranscoder:
    """Pretends to encode: 'probes' the bytes, copies them as the outputs."""

    info: MediaInfo = field(
        default_factory=lambda: MediaInfo(
            duration_s=4.0, width=1920, height=1080, video_codec="h264", audio_codec="aac", rotation=0
        )
    )
    reject_probe: str | None = None
    encode_error: Exception | None = None
    encodes: int = 0
    timeouts: list[float] = field(default_factory=list)
    # Runs while "encoding", to make things happen meanwhile.
    during_encode: Callable[[], None] | None = None
    # What decoding "finds" when the header lied; None: the probed duration.
    decoded_duration_s: float | None = None
    limits: list[tuple[float, int]] = field(default_factory=list)

    def probe(self, path: str, *, max_pixels: int | None = None) -> MediaInfo:
        if self.reject_probe:
            raise MediaRejected(self.reject_probe)
        return self.info

    def encode(
        self,
        source_path: str,
        info: MediaInfo,
        out_dir: str,
        *,
        watermark_path: str,
        short_side: int = 720,
        max_duration_s: float,
        max_pixels: int,
        on_progress: Callable[[float], None] | None = None,
        timeout_s: float = 780.0,
    ) -> EncodeResult:
        self.encodes += 1
        self.timeouts.append(timeout_s)
        self.limits.append((max_duration_s, max_pixels))
        if self.during_encode:
            self.during_encode()
        if self.encode_error:
            raise self.encode_error
        for fraction in (0.25, 0.5, 1.0):
            if on_progress:
                on_progress(fraction)
        rendition, thumbnail = Path(out_dir) / "r.mp4", Path(out_dir) / "t.jpg"
        shutil.copy(source_path, rendition)
        thumbnail.write_bytes(b"\xff\xd8fake")
        return EncodeResult(
            rendition_path=str(rendition),
            thumbnail_path=str(thumbnail),
            width=1280,
            height=720,
            duration_s=info.duration_s if self.decoded_duration_s is None else self.decoded_duration_s,
            ffmpeg_seconds=0.1,
            ffmpeg_maxrss_kb=None,
        )


class FakeMediaUrls:
    """Unsigned links on a made-up CDN."""

    def url_for(self, key: str) -> str:
        return f"https://cdn.example/{key}"

    def check(self) -> None:
        pass


class FakeIdentity:
    """Accepts every account; an IdToken is 'token:<user id>:<email>'."""

    def sign_up(self, email: str, password: str) -> str:
        return f"user-{email}"

    def confirm(self, email: str, code: str) -> None:
        pass

    def resend_code(self, email: str) -> None:
        pass

    def log_in(self, email: str, password: str) -> Tokens:
        token = f"token:{self.sign_up(email, password)}:{email}"
        return Tokens(id_token=token, access_token=token, refresh_token=None, expires_in=3600)

    def verify(self, id_token: str) -> Principal:
        kind, _, rest = id_token.partition(":")
        user_id, _, email = rest.partition(":")
        if kind != "token" or not user_id or not email:
            raise NotAuthenticated("not a token")
        return Principal(user_id=user_id, email=email)

    def check(self) -> None:
        pass


@dataclass
class FakePorts:
    """One fake of every port, typed, and the composition root built on them
    the way production builds it on adapters."""

    videos: FakeVideoRepository = field(default_factory=FakeVideoRepository)
    uploads: FakeBlobStore = field(default_factory=FakeBlobStore)
    media: FakeBlobStore = field(default_factory=FakeBlobStore)
    mailer: FakeMailer = field(default_factory=FakeMailer)
    identity: FakeIdentity = field(default_factory=FakeIdentity)
    media_urls: FakeMediaUrls = field(default_factory=FakeMediaUrls)
    transcoder: FakeTranscoder = field(default_factory=FakeTranscoder)

    def container(self, settings: Settings) -> Container:
        return Container(
            settings,
            videos=self.videos,
            uploads=self.uploads,
            media=self.media,
            mailer=self.mailer,
            identity=self.identity,
            media_urls=self.media_urls,
            transcoder=self.transcoder,
        )
