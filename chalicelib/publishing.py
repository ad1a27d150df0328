"""Publishing HLS while ffmpeg writes it: segments reach the media bucket as they are made.

`HlsPublisher` watches the directory ffmpeg writes a run's HLS into
(`master.m3u8`, one playlist per variant, their init files and segments) from
its own thread. ffmpeg replaces a playlist atomically and lists a segment only
once the segment is complete, so every segment a playlist names is final. On
each pass the publisher, for every variant the master names:

1. uploads the variant's init file and each newly listed segment (immutable:
   they never change), then deletes the local copy of the segment, so the job's
   `/tmp` holds only the segments ffmpeg is still writing;
2. then uploads the playlist itself, no-cache while it is an EVENT playlist, so
   a player never reads a playlist naming a segment that is not stored yet.

Once every variant (video rungs and the audio rendition) has a stored segment
and playlist, it uploads the master and calls `on_playable` (once) with the
rungs the master lists. `finish`,
called after ffmpeg has exited, publishes what is left and the final (ENDLIST)
playlists as immutable, then the master. Every key is appended to `written`
before it is uploaded, so a failed run can take back exactly what it stored.

Only names from playlists ffmpeg wrote are used, and only if they stay inside
the HLS directory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib import telemetry
from chalicelib.domain import Rung
from chalicelib.ports import IMMUTABLE, NO_CACHE, BlobStore

logger = logging.getLogger(__name__)

MASTER_PLAYLIST = "master.m3u8"
DEFAULT_POLL_S = 0.25

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}
_URI_ATTRIBUTE = re.compile(r'URI="([^"]+)"')
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


class PublishingError(Exception):
    """A playlist names something the publisher will not publish (a path outside
    the HLS directory, or a file that is not there)."""


@dataclass
class _Variant:
    """One variant playlist and what of it is stored."""

    playlist: str  # relative to the HLS directory, e.g. "720p/index.m3u8"
    published: set[str] = field(default_factory=set)  # relative paths of stored init files and segments
    segments: int = 0
    playlist_text: str | None = None  # as last uploaded
    final: bool = False


class HlsPublisher:
    """Uploads an HLS directory ffmpeg is writing to `key_prefix` in `store`.

    Use as: `start()` before ffmpeg starts, `check()` now and then from the job
    (raises what went wrong in the publisher's thread), `finish()` once ffmpeg
    has exited successfully, and `stop()` in every case (a `finally`).
    """

    def __init__(
        self,
        store: BlobStore,
        hls_dir: str,
        key_prefix: str,
        *,
        written: list[str],
        on_playable: Callable[[tuple[Rung, ...]], None],
        poll_s: float = DEFAULT_POLL_S,
    ):
        self.store = store
        self.hls_dir = os.path.realpath(hls_dir)
        self.key_prefix = key_prefix
        self.written = written
        self.on_playable = on_playable
        self.poll_s = poll_s
        self.playable = False
        # Seconds from start() to the video being playable, for the logs.
        self.playable_after_s: float | None = None
        self._started = time.monotonic()
        self.error: BaseException | None = None
        self._variants: dict[str, _Variant] = {}
        self._master_text: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # One pass at a time: the thread's, or finish()'s after the thread ended.
        self._lock = threading.Lock()

    @property
    def master_key(self) -> str:
        return f"{self.key_prefix}{MASTER_PLAYLIST}"

    def start(self) -> None:
        """Start watching the directory in a daemon thread."""
        self._started = time.monotonic()
        # In this thread's context: its log lines carry the job's correlation id.
        self._thread = threading.Thread(
            target=telemetry.in_this_context(self._watch), name="hls-publisher", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raise the error that stopped the publisher's thread, if any."""
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop the thread and wait for its pass to end; publishes nothing more."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        """ffmpeg is done: publish every remaining segment, then the final playlists
        (immutable) and the master. Raises the thread's error, if any."""
        self.stop()
        self.check()
        with self._lock:
            self._publish(final=True)

    def publish_once(self) -> None:
        """One pass over the directory (what the thread does every `poll_s`)."""
        with self._lock:
            self._publish(final=False)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                self.publish_once()
            except BaseException as error:  # noqa: BLE001 - handed to the job by check()
                logger.warning("publishing %s stopped: %s", self.key_prefix, error)
                self.error = error
                return
            if self.playable and self._all_final():
                return
            self._stopping.wait(self.poll_s)

    def _publish(self, *, final: bool) -> None:
        master = self._read(MASTER_PLAYLIST)
        if master is None:
            if final:
                raise PublishingError("ffmpeg wrote no master playlist")
            return
        for playlist in self._variant_playlists(master):
            variant = self._variants.setdefault(playlist, _Variant(playlist))
            self._publish_variant(variant, final=final)
        if final:
            missing = [v.playlist for v in self._variants.values() if not v.final or not v.segments]
            if missing:
                raise PublishingError(f"unfinished playlists after ffmpeg ended: {missing}")
        ready = all(v.segments and v.playlist_text is not None for v in self._variants.values())
        if not ready:
            return
        if master != self._master_text or final:
            self._upload(MASTER_PLAYLIST, IMMUTABLE if final else NO_CACHE)
            self._master_text = master
        if not self.playable:
            self.on_playable(master_rungs(master))
            self.playable = True
            self.playable_after_s = time.monotonic() - self._started

    def _publish_variant(self, variant: _Variant, *, final: bool) -> None:
        if variant.final:
            return
        text = self._read(variant.playlist)
        if text is None:
            return
        folder = os.path.dirname(variant.playlist)
        for uri, is_segment in _media_uris(text):
            path = self._inside(uri, folder)
            if path in variant.published:
                continue
            self._upload(path, IMMUTABLE)
            variant.published.add(path)
            if is_segment:
                variant.segments += 1
                # Stored for good: the job's /tmp need not keep it.
                os.remove(os.path.join(self.hls_dir, path))
        ended = "#EXT-X-ENDLIST" in text
        if text != variant.playlist_text:
            self._upload(variant.playlist, IMMUTABLE if ended else NO_CACHE)
            variant.playlist_text = text
            variant.final = ended

    def _variant_playlists(self, master: str) -> list[str]:
        playlists: list[str] = []
        for line in master.splitlines():
            line = line.strip()
            uris = _URI_ATTRIBUTE.findall(line) if line.startswith("#EXT-X-MEDIA:") else []
            if line and not line.startswith("#"):
                uris = [line]
            playlists.extend(self._inside(uri) for uri in uris)
        return list(dict.fromkeys(playlists))

    def _all_final(self) -> bool:
        return bool(self._variants) and all(v.final for v in self._variants.values())

    def _inside(self, uri: str, folder: str = "") -> str:
        """The path, relative to the HLS directory, of `uri` as a playlist in
        `folder` names it; PublishingError unless it is a file inside that directory."""
        full = os.path.realpath(os.path.join(self.hls_dir, folder, uri))
        if "://" in uri or os.path.isabs(uri) or not full.startswith(self.hls_dir + os.sep):
            raise PublishingError(f"a playlist names {uri!r}, outside the HLS directory")
        return os.path.relpath(full, self.hls_dir)

    def _read(self, relative: str) -> str | None:
        try:
            with open(os.path.join(self.hls_dir, relative), encoding="utf-8") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def _upload(self, relative: str, cache_control: str) -> None:
        path = os.path.join(self.hls_dir, relative)
        if not os.path.isfile(path):
            raise PublishingError(f"a playlist names {relative!r}, which ffmpeg did not write")
        key = f"{self.key_prefix}{relative.replace(os.sep, '/')}"
        content_type = _CONTENT_TYPES.get(os.path.splitext(relative)[1], "application/octet-stream")
        if key not in self.written:
            self.written.append(key)
        self.store.upload(path, key, content_type, cache_control=cache_control)


def _media_uris(playlist: str) -> list[tuple[str, bool]]:
    """The init files (False) and segments (True) a media playlist names, in order."""
    uris: list[tuple[str, bool]] = []
    for line in playlist.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MAP:"):
            uris.extend((uri, False) for uri in _URI_ATTRIBUTE.findall(line))
        elif line and not line.startswith("#"):
            uris.append((line, True))
    return uris


def master_rungs(master: str) -> tuple[Rung, ...]:
    """The video rungs a master playlist lists (its EXT-X-STREAM-INF lines), largest first."""
    rungs = []
    for line in master.splitlines():
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        attributes = dict(_ATTRIBUTE.findall(line.partition(":")[2]))
        width, _, height = attributes.get("RESOLUTION", "").partition("x")
        if not (width.isdigit() and height.isdigit() and attributes.get("BANDWIDTH", "").isdigit()):
            raise PublishingError(f"the master playlist lists a variant without size or bandwidth: {line}")
        w, h = int(width), int(height)
        rungs.append(Rung(name=f"{min(w, h)}p", width=w, height=h, bandwidth=int(attributes["BANDWIDTH"])))
    return tuple(sorted(rungs, key=lambda rung: rung.width * rung.height, reverse=True))
