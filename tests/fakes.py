"""Small in-memory stand-ins for the provider interfaces, for unit tests."""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.adapters.dynamo import decode_cursor, encode_cursor
from chalicelib.bootstrap import Container
from chalicelib.domain import (
    PROCESSABLE_STATUSES,
    NotAuthenticated,
    Page,
    Principal,
    Rung,
    Tokens,
    UploadedPart,
    UploadTicket,
    Video,
    VideoStatus,
    utcnow,
)
from chalicelib.ports import (
    IMMUTABLE,
    MediaInfo,
    MediaProcessingError,
    MediaRejected,
    MediaSource,
    NoSuchUpload,
    PartsRefused,
    StaleUpdate,
    StoredObject,
    TranscodeResult,
)
from chalicelib.settings import Settings
from chalicelib.usage import (
    NO_USAGE,
    OverQuota,
    QuotaUsage,
    RolledUpDay,
    UsageChange,
    UsageDelta,
    breached_quota,
    month_of,
)


class FakeUsageRepository:
    """Behaves as DynamoUsageRepository does (tests/contract/test_usage_repository.py);
    FakeVideoRepository counts its writes' `usage=` here, all or nothing."""

    def __init__(self, site_shards: int = 4) -> None:
        self.site_shards = site_shards
        self.days: dict[tuple[str, date], UsageDelta] = {}
        self.months: dict[tuple[str, str], float] = {}
        self.totals: dict[str, int] = {}
        self.changes: dict[str, int] = {}
        self.shards: dict[tuple[int, date], UsageDelta] = {}
        self.rolled: dict[date, RolledUpDay] = {}
        self.through: date | None = None
        # A check and its count are one step, as in DynamoDB's transaction.
        self.lock = threading.RLock()

    def refuse(self, change: UsageChange) -> None:
        """OverQuota if the change's limits refuse it; nothing changes either way."""
        if change.limits is None:
            return
        quota = breached_quota(change.limits, self.quota_usage(change.owner_id, change.day), change.delta)
        if quota is not None:
            raise OverQuota(quota)

    def count(self, change: UsageChange) -> None:
        owner, day, delta = change.owner_id, change.day, change.delta
        self.days[(owner, day)] = self.days.get((owner, day), NO_USAGE) + delta
        shard = (random.randrange(self.site_shards), day)
        self.shards[shard] = self.shards.get(shard, NO_USAGE) + delta
        self.totals[owner] = self.totals.get(owner, 0) + delta.bytes_added
        self.changes[owner] = self.changes.get(owner, 0) + 1
        month = (owner, change.month)
        self.months[month] = self.months.get(month, 0.0) + delta.seconds_processed

    def quota_usage(self, owner_id: str, day: date) -> QuotaUsage:
        return QuotaUsage(
            videos_today=self.days.get((owner_id, day), NO_USAGE).videos_created,
            bytes_stored=self.totals.get(owner_id, 0),
            seconds_this_month=self.months.get((owner_id, month_of(day)), 0.0),
            changes=self.changes.get(owner_id, 0),
        )

    def user_days(self, owner_id: str, first: date) -> tuple[dict[date, UsageDelta], int]:
        days = {day: delta for (owner, day), delta in self.days.items() if owner == owner_id and day >= first}
        return days, self.totals.get(owner_id, 0)

    def site_shard_days(self, first: date, last: date) -> dict[date, UsageDelta]:
        days: dict[date, UsageDelta] = {}
        for (_, day), delta in self.shards.items():
            if first <= day <= last:
                days[day] = days.get(day, NO_USAGE) + delta
        return days

    def first_site_day(self) -> date | None:
        return min((day for _, day in self.shards), default=None)

    def rolled_up_days(self, first: date, last: date) -> dict[date, RolledUpDay]:
        return {day: rolled for day, rolled in self.rolled.items() if first <= day <= last}

    def rolled_up_through(self) -> date | None:
        return self.through

    def save_rolled_up(self, days: Iterable[RolledUpDay], through: date) -> None:
        self.rolled.update({day.day: day for day in days})
        self.through = through

    def check(self) -> None:
        pass


class FakeVideoRepository:
    """Behaves as DynamoVideoRepository does: tests/contract holds both to one suite."""

    def __init__(self, usage: FakeUsageRepository | None = None) -> None:
        self.videos: dict[tuple[str, str], Video] = {}
        # Where the `usage=` of add, update and delete is counted.
        self.usage = usage if usage is not None else FakeUsageRepository()

    def add(self, video: Video, *, usage: UsageChange | None = None) -> None:
        if (video.owner_id, video.id) in self.videos:
            raise RuntimeError(f"could not store video {video.id}")
        if usage is not None:
            with self.usage.lock:
                self.usage.refuse(usage)
                self.usage.count(usage)
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

    def update(
        self,
        video: Video,
        *,
        expected: Iterable[VideoStatus] | None = None,
        unchanged_since: datetime | None = None,
        usage: UsageChange | None = None,
        **changes: Any,
    ) -> Video:
        current = self.videos.get((video.owner_id, video.id))
        if current is None or (expected is not None and current.status not in set(expected)):
            raise StaleUpdate(video.id)
        if unchanged_since is not None and current.updated_at != unchanged_since:
            raise StaleUpdate(video.id)
        updated = current.with_changes(updated_at=utcnow(), **changes)
        if usage is not None:
            self.usage.count(usage)
        self.videos[(video.owner_id, video.id)] = updated
        return updated

    def list_idle(self, status: VideoStatus, updated_before: datetime) -> Iterator[Video]:
        if status not in PROCESSABLE_STATUSES:
            raise ValueError(f"only open videos are indexed, not {status.value} ones")
        idle = [v for v in self.videos.values() if v.status is status and v.updated_at < updated_before]
        yield from sorted(idle, key=lambda v: v.updated_at)

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

    def delete(
        self,
        owner_id: str,
        video_id: str,
        *,
        usage: UsageChange | None = None,
        unchanged_since: datetime | None = None,
    ) -> None:
        current = self.videos.get((owner_id, video_id))
        if current is None:
            return
        if unchanged_since is not None and current.updated_at != unchanged_since:
            raise StaleUpdate(video_id)
        if usage is not None:
            self.usage.count(usage)
        del self.videos[(owner_id, video_id)]

    def check(self) -> None:
        pass


# Presigned GET locations the fake stores handed out: location -> (store, key).
_PRESIGNED: dict[str, tuple[FakeBlobStore, str]] = {}


def read_source(source: MediaSource) -> bytes:
    """What a GET of a fake presigned source answers, as S3 does: the bytes, or
    an error like ffmpeg's when the key no longer holds the version asked for (412)."""
    store, key = _PRESIGNED[source.location]
    stored = store.head(key)
    if_match = dict(source.headers).get("If-Match", "").strip('"')
    if stored is None or (if_match and stored.etag != if_match):
        raise MediaProcessingError("Server returned 412 Precondition Failed")
    return store.objects[key][0]


@dataclass
class FakeBlobStore:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    presigned: list[dict[str, Any]] = field(default_factory=list)
    presigned_downloads: list[dict[str, Any]] = field(default_factory=list)
    cache_control: dict[str, str] = field(default_factory=dict)
    # Every upload's key, in order.
    uploads: list[str] = field(default_factory=list)
    # Unfinished multipart uploads: (key, upload id) → their parts' bytes by number.
    multipart_uploads: dict[tuple[str, str], dict[int, bytes]] = field(default_factory=dict)
    # The content type each multipart upload's object will have, by upload id.
    multipart_content_types: dict[str, str] = field(default_factory=dict)
    # S3 refuses to complete an upload whose parts but the last are smaller.
    min_part_bytes: int = 5 * 1024 * 1024
    presigned_parts: list[dict[str, Any]] = field(default_factory=list)
    # Objects made by completing a multipart upload: key → (their bytes, their ETag).
    completed_multipart: dict[str, tuple[bytes, str]] = field(default_factory=dict)

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
        completed = self.completed_multipart.get(key)
        # A completed multipart upload's ETag, as S3's: the parts' MD5s' MD5 and "-N".
        etag = completed[1] if completed and completed[0] is data else hashlib.md5(data).hexdigest()
        return StoredObject(key=key, size_bytes=len(data), content_type=content_type, etag=etag)

    def presign_download(self, key: str, *, if_match: str | None, expires_s: int) -> MediaSource:
        self.presigned_downloads.append({"key": key, "if_match": if_match, "expires_s": expires_s})
        location = f"fake-store://{id(self)}/{key}"
        _PRESIGNED[location] = (self, key)
        return MediaSource(location, (("If-Match", f'"{if_match}"'),) if if_match else ())

    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None:
        self.objects[key] = (Path(path).read_bytes(), content_type)
        self.cache_control[key] = cache_control
        self.uploads.append(key)

    def delete_prefix(self, prefix: str) -> None:
        for key in [k for k in self.objects if k.startswith(prefix)]:
            del self.objects[key]

    def abort_multipart_uploads(self, prefix: str) -> int:
        aborted = [upload for upload in self.multipart_uploads if upload[0].startswith(prefix)]
        for upload in aborted:
            del self.multipart_uploads[upload]
        return len(aborted)

    def start_multipart_upload(self, key: str, content_type: str) -> str:
        upload_id = f"upload-{len(self.multipart_content_types) + 1}"
        self.multipart_uploads[(key, upload_id)] = {}
        self.multipart_content_types[upload_id] = content_type
        return upload_id

    def presign_part_upload(
        self, key: str, upload_id: str, part_number: int, size_bytes: int, expires_s: int
    ) -> str:
        self.presigned_parts.append(
            {
                "key": key,
                "upload_id": upload_id,
                "part_number": part_number,
                "size_bytes": size_bytes,
                "expires_s": expires_s,
            }
        )
        return f"https://uploads.example/{key}?uploadId={upload_id}&partNumber={part_number}"

    def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        """What a client's PUT of a part does; the part's ETag."""
        if (key, upload_id) not in self.multipart_uploads:
            raise NoSuchUpload(upload_id)
        self.multipart_uploads[(key, upload_id)][part_number] = data
        return hashlib.md5(data).hexdigest()

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        if (key, upload_id) not in self.multipart_uploads:
            raise NoSuchUpload(upload_id)
        parts = self.multipart_uploads[(key, upload_id)]
        return [
            UploadedPart(number, hashlib.md5(data).hexdigest(), len(data))
            for number, data in sorted(parts.items())
        ]

    def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> str:
        stored = {part.part_number: part for part in self.list_parts(key, upload_id)}
        for position, (number, etag) in enumerate(parts):
            if number not in stored or stored[number].etag != etag:
                raise PartsRefused(f"Part {number} was not uploaded, or its ETag is not {etag}.")
            if position < len(parts) - 1 and stored[number].size_bytes < self.min_part_bytes:
                raise PartsRefused("Your proposed upload is smaller than the minimum allowed size")
        data = self.multipart_uploads.pop((key, upload_id))
        joined = b"".join(data[n] for n, _ in parts)
        self.objects[key] = (joined, self.multipart_content_types[upload_id])
        digests = b"".join(hashlib.md5(data[n]).digest() for n, _ in parts)
        etag = f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"
        self.completed_multipart[key] = (joined, etag)
        return etag

    def check(self) -> None:
        pass


@dataclass
class FakeJobQueue:
    """Records the upload jobs sent back to the queue; the dead-letter depth is set by the test."""

    # (bucket, key, etag) of every requeued upload, in order.
    requeued: list[tuple[str, str, str]] = field(default_factory=list)
    dead_letters: int = 0
    # Jobs waiting in the jobs queue, as the test sets it.
    waiting: int = 0
    # Set to make the queue unreachable.
    broken: Exception | None = None

    def requeue_upload(self, bucket: str, key: str, etag: str) -> None:
        if self.broken:
            raise self.broken
        self.requeued.append((bucket, key, etag))

    def dead_letter_depth(self) -> int:
        if self.broken:
            raise self.broken
        return self.dead_letters

    def backlog(self) -> int:
        if self.broken:
            raise self.broken
        return self.waiting

    def check(self) -> None:
        if self.broken:
            raise self.broken


@dataclass
class FakeCache:
    """The Cache port in memory, behaving as the adapters do (tests/contract/test_cache.py
    holds them to one suite): a value is fresh for its TTL, then kept `stale_s` longer
    and served stale to others while one caller recomputes it; one computation per key
    at a time; a broken cache (`broken` set) computes instead of failing."""

    clock: Callable[[], float] = time.time
    stale_s: float = 60.0
    # How long a caller waits for another's computation before computing itself.
    wait_s: float = 5.0
    broken: Exception | None = None
    # key -> (value as JSON, fresh until, kept until), in `clock` seconds.
    entries: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    stale: int = 0
    errors: int = 0
    # Keys being computed. Two fakes given the same entries, computing and lock
    # behave as two processes on one store.
    computing: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get_or_compute(self, key: str, ttl_s: int, compute: Callable[[], Any]) -> Any:
        if self.broken:
            self.errors += 1
            self.misses += 1
            return compute()
        deadline = time.monotonic() + self.wait_s
        while True:
            with self.lock:
                now = self.clock()
                entry = self.entries.get(key)
                if entry and now >= entry[2]:
                    entry = None
                if entry and now < entry[1]:
                    self.hits += 1
                    return json.loads(entry[0])
                running = self.computing.get(key)
                if running is None:
                    self.computing[key] = threading.Event()
                elif entry:
                    self.stale += 1
                    return json.loads(entry[0])
            if running is None:
                break
            if not running.wait(max(0.0, deadline - time.monotonic())):
                return self._compute_and_keep(key, ttl_s, compute)
        try:
            return self._compute_and_keep(key, ttl_s, compute)
        finally:
            with self.lock:
                self.computing.pop(key).set()

    def _compute_and_keep(self, key: str, ttl_s: int, compute: Callable[[], Any]) -> Any:
        value = compute()
        with self.lock:
            self.misses += 1
            try:
                text = json.dumps(value)
            except (TypeError, ValueError):
                self.errors += 1
                return value
            now = self.clock()
            self.entries[key] = (text, now + ttl_s, now + ttl_s + self.stale_s)
        return json.loads(text)

    def invalidate(self, key: str) -> None:
        if self.broken:
            self.errors += 1
            return
        with self.lock:
            self.entries.pop(key, None)

    def check(self) -> None:
        if self.broken:
            raise self.broken


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
    """Pretends to transcode: 'probes' the source as the presigned GET reads it,
    writes an HLS directory a segment at a time (as ffmpeg does) and copies the
    source's bytes as the MP4."""

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
    # Runs once the first segment of every variant is written.
    after_first_segments: Callable[[], None] | None = None
    # What decoding "finds" when the header lied; None: the probed duration.
    decoded_duration_s: float | None = None
    limits: list[tuple[float, int]] = field(default_factory=list)
    sources: list[MediaSource] = field(default_factory=list)

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        self.sources.append(source)
        read_source(source)
        if self.reject_probe:
            raise MediaRejected(self.reject_probe)
        return self.info

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
        self.encodes += 1
        self.timeouts.append(timeout_s)
        self.limits.append((max_duration_s, max_pixels))
        self.sources.append(source)
        data = read_source(source)
        if self.during_encode:
            self.during_encode()
        if self.encode_error:
            raise self.encode_error
        rungs = tuple(_fake_rung(info, side) for side in ladder if side <= min(info.width, info.height))
        hls = HlsDirWriter(Path(out_dir) / "hls", rungs, segment_s)
        duration_s = info.duration_s if self.decoded_duration_s is None else self.decoded_duration_s
        count = max(1, math.ceil(duration_s / segment_s))
        for number in range(count):
            hls.write_segment()
            if number == 0 and self.after_first_segments:
                self.after_first_segments()
            if on_progress:
                on_progress((number + 1) / count)
        hls.end()
        mp4, thumbnail = Path(out_dir) / "out.mp4", Path(out_dir) / "thumbnail.jpg"
        mp4.write_bytes(data)
        thumbnail.write_bytes(b"\xff\xd8fake")
        mp4_rung = next((r for r in rungs if int(r.name[:-1]) <= mp4_short_side), rungs[-1])
        return TranscodeResult(
            out_dir=out_dir,
            hls_dir=str(hls.hls_dir),
            rungs=rungs,
            mp4_path=str(mp4),
            mp4_rung=mp4_rung,
            thumbnail_path=str(thumbnail),
            duration_s=duration_s,
            ffmpeg_seconds=0.1,
            ffmpeg_maxrss_kb=None,
        )


def _fake_rung(info: MediaInfo, short_side: int) -> Rung:
    scale = short_side / min(info.width, info.height)
    width, height = round(info.width * scale / 2) * 2, round(info.height * scale / 2) * 2
    return Rung(f"{short_side}p", width, height, bandwidth=short_side * 5000)


class HlsDirWriter:
    """Writes an HLS directory as ffmpeg does, over time: each variant's init file
    and segments before the playlist that lists them, playlists replaced
    atomically, the master once every variant has a segment."""

    def __init__(self, hls_dir: Path, rungs: Sequence[Rung] = (), segment_s: float = 2.0):
        self.hls_dir = hls_dir
        self.rungs = tuple(rungs) or (
            Rung("1080p", 1920, 1080, 5_628_000),
            Rung("360p", 640, 360, 828_000),
        )
        self.variants = [rung.name for rung in self.rungs] + ["audio"]
        self.segment_s = segment_s
        self.segments: dict[str, int] = dict.fromkeys(self.variants, 0)
        self.ended = False

    def write_segment(self, variants: Iterable[str] | None = None, *, listed: bool = True) -> None:
        """One more segment of each of `variants` (all by default); unlisted: still being written."""
        for variant in self.variants if variants is None else variants:
            folder = self.hls_dir / variant
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "init.mp4").exists():
                (folder / "init.mp4").write_bytes(b"init " + variant.encode())
            (folder / f"seg{self.segments[variant]:05d}.m4s").write_bytes(b"segment " + variant.encode())
            if listed:
                self.segments[variant] += 1
                self._write_playlist(variant)
        if all(self.segments.values()) and not (self.hls_dir / "master.m3u8").exists():
            self._replace(self.hls_dir / "master.m3u8", self.master())

    def end(self) -> None:
        """ffmpeg's last write: every playlist ends (ENDLIST)."""
        self.ended = True
        for variant in self.variants:
            self._write_playlist(variant)

    def master(self) -> str:
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:7",
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio_0",DEFAULT=YES,URI="audio/index.m3u8"',
        ]
        for rung in self.rungs:
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={rung.bandwidth},RESOLUTION={rung.width}x{rung.height},"
                f'CODECS="avc1.640028,mp4a.40.2",AUDIO="aud"'
            )
            lines.append(f"{rung.name}/index.m3u8")
        return "\n".join(lines) + "\n"

    def _write_playlist(self, variant: str) -> None:
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:7",
            f"#EXT-X-TARGETDURATION:{int(self.segment_s)}",
            "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-PLAYLIST-TYPE:EVENT",
            '#EXT-X-MAP:URI="init.mp4"',
        ]
        for number in range(self.segments[variant]):
            lines += [f"#EXTINF:{self.segment_s:.6f},", f"seg{number:05d}.m4s"]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        self._replace(self.hls_dir / variant / "index.m3u8", "\n".join(lines) + "\n")

    @staticmethod
    def _replace(path: Path, text: str) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)


class FakeMediaUrls:
    """Unsigned links on a made-up CDN."""

    def url_for(self, key: str) -> str:
        return f"https://cdn.example/{key}"

    def stream_url_for(self, master_key: str, prefix: str) -> str:
        """The master's link, with the prefix its one signature covers shown in the query."""
        return f"https://cdn.example/{master_key}?for={prefix}*"

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
    jobs: FakeJobQueue = field(default_factory=FakeJobQueue)
    cache: FakeCache = field(default_factory=FakeCache)

    @property
    def usage(self) -> FakeUsageRepository:
        """The counters the fake videos repository counts into."""
        return self.videos.usage

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
            jobs=self.jobs,
            cache=self.cache,
            usage=self.videos.usage,
        )
