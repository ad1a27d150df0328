"""The HLS publisher against a directory written over time, as ffmpeg writes it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib.domain import Rung
from chalicelib.ports import IMMUTABLE, NO_CACHE
from chalicelib.publishing import HlsPublisher, PublishingError, master_rungs
from tests.fakes import FakeBlobStore, HlsDirWriter

PREFIX = "media/owner/video/run/hls/"


class Published:
    """A publisher on a fake store, with what it reported."""

    def __init__(self, tmp_path: Path, store: FakeBlobStore | None = None):
        self.hls_dir = tmp_path / "hls"
        self.ffmpeg = HlsDirWriter(self.hls_dir)
        self.store = store or FakeBlobStore()
        self.written: list[str] = []
        self.playable_calls: list[tuple[Rung, ...]] = []
        self.publisher = HlsPublisher(
            self.store,
            str(self.hls_dir),
            PREFIX,
            written=self.written,
            on_playable=self.playable_calls.append,
            poll_s=0.01,
        )

    def stored(self) -> list[str]:
        return [key.removeprefix(PREFIX) for key in self.store.uploads]

    def cache(self, relative: str) -> str:
        return self.store.cache_control[PREFIX + relative]


@pytest.fixture
def published(tmp_path: Path) -> Published:
    return Published(tmp_path)


def test_nothing_is_published_before_ffmpeg_lists_a_segment(published: Published) -> None:
    published.publisher.publish_once()  # the directory is not even there yet
    published.ffmpeg.write_segment(listed=False)  # files still being written
    published.publisher.publish_once()

    assert published.store.uploads == []
    assert published.playable_calls == []


def test_segments_are_stored_before_the_playlist_that_lists_them(published: Published) -> None:
    published.ffmpeg.write_segment(["1080p"])
    published.publisher.publish_once()
    published.ffmpeg.write_segment(["1080p", "360p", "audio"])
    published.publisher.publish_once()

    keys = published.stored()
    for variant in ("1080p", "360p", "audio"):
        playlist_at = keys.index(f"{variant}/index.m3u8")
        assert keys.index(f"{variant}/init.mp4") < playlist_at
        assert keys.index(f"{variant}/seg00000.m4s") < playlist_at
        assert published.cache(f"{variant}/index.m3u8") == NO_CACHE
        assert published.cache(f"{variant}/seg00000.m4s") == IMMUTABLE
    # 1080p's second segment came in the second pass: then its playlist again.
    assert keys.index("1080p/seg00001.m4s") < len(keys) - 1 - keys[::-1].index("1080p/index.m3u8")
    assert keys.index("master.m3u8") > max(keys.index(f"{v}/index.m3u8") for v in ("1080p", "360p", "audio"))


def test_the_video_is_playable_once_every_variant_and_the_audio_have_a_segment(published: Published) -> None:
    published.ffmpeg.write_segment(["1080p", "360p"])
    published.ffmpeg._replace(published.hls_dir / "master.m3u8", published.ffmpeg.master())  # master early
    published.publisher.publish_once()
    assert published.playable_calls == []
    assert "master.m3u8" not in published.stored()

    published.ffmpeg.write_segment(["audio"])
    published.publisher.publish_once()
    published.ffmpeg.write_segment()
    published.publisher.publish_once()

    assert published.playable_calls == [published.ffmpeg.rungs]
    assert published.publisher.playable
    assert published.cache("master.m3u8") == NO_CACHE


def test_stored_segments_are_deleted_locally_and_init_files_kept(published: Published) -> None:
    published.ffmpeg.write_segment()
    published.ffmpeg.write_segment()
    published.ffmpeg.write_segment(listed=False)  # being written: not touched
    published.publisher.publish_once()

    left = sorted(str(p.relative_to(published.hls_dir)) for p in published.hls_dir.rglob("*.m4s"))
    assert left == ["1080p/seg00002.m4s", "360p/seg00002.m4s", "audio/seg00002.m4s"]
    assert (published.hls_dir / "1080p" / "init.mp4").exists()
    assert published.store.objects[PREFIX + "1080p/seg00001.m4s"][0] == b"segment 1080p"


def test_finish_stores_the_rest_and_the_final_playlists_immutable(published: Published) -> None:
    published.ffmpeg.write_segment()
    published.publisher.publish_once()
    published.ffmpeg.write_segment()
    published.ffmpeg.write_segment()
    published.ffmpeg.end()

    published.publisher.finish()

    for variant in ("1080p", "360p", "audio"):
        playlist = published.store.objects[PREFIX + f"{variant}/index.m3u8"][0].decode()
        assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
        assert published.cache(f"{variant}/index.m3u8") == IMMUTABLE
        assert {f"{variant}/seg0000{n}.m4s" for n in range(3)} <= set(published.stored())
    assert published.cache("master.m3u8") == IMMUTABLE
    assert published.playable_calls == [published.ffmpeg.rungs]
    assert not list(published.hls_dir.rglob("*.m4s"))
    # Every key stored is recorded for the run, once.
    assert sorted(published.written) == sorted(set(published.store.uploads))


def test_a_clip_shorter_than_a_pass_is_published_and_playable_by_finish(published: Published) -> None:
    published.ffmpeg.write_segment()
    published.ffmpeg.end()

    published.publisher.finish()

    assert published.playable_calls == [published.ffmpeg.rungs]
    assert published.cache("master.m3u8") == IMMUTABLE


def test_finish_refuses_playlists_ffmpeg_did_not_end(published: Published) -> None:
    published.ffmpeg.write_segment()

    with pytest.raises(PublishingError, match="unfinished"):
        published.publisher.finish()


def test_finish_refuses_a_run_without_a_master(published: Published) -> None:
    with pytest.raises(PublishingError, match="no master"):
        published.publisher.finish()


@pytest.mark.parametrize("uri", ["../../etc/passwd", "/etc/passwd", "http://evil.example/x.m4s"])
def test_a_playlist_naming_anything_outside_the_hls_directory_is_refused(
    published: Published, uri: str
) -> None:
    published.ffmpeg.write_segment()
    playlist = published.hls_dir / "360p" / "index.m3u8"
    playlist.write_text(playlist.read_text() + f"#EXTINF:2.0,\n{uri}\n")

    with pytest.raises(PublishingError, match="outside"):
        published.publisher.publish_once()
    assert not any("passwd" in key or "evil" in key for key in published.store.objects)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_thread_publishes_while_ffmpeg_writes(published: Published) -> None:
    published.publisher.start()
    try:
        published.ffmpeg.write_segment()
        wait_for(lambda: bool(published.playable_calls))
        published.ffmpeg.write_segment()
        wait_for(lambda: PREFIX + "audio/seg00001.m4s" in published.store.objects)
        published.ffmpeg.end()
        published.publisher.finish()
    finally:
        published.publisher.stop()

    assert len(published.playable_calls) == 1
    assert published.cache("audio/index.m3u8") == IMMUTABLE


class BrokenStore(FakeBlobStore):
    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None:
        raise ConnectionError("media bucket unreachable")


def test_an_error_in_the_thread_is_raised_to_the_job(tmp_path: Path) -> None:
    published = Published(tmp_path, BrokenStore())
    published.publisher.start()
    try:
        published.ffmpeg.write_segment()
        wait_for(lambda: published.publisher.error is not None)
        with pytest.raises(ConnectionError):
            published.publisher.check()
        with pytest.raises(ConnectionError):
            published.publisher.finish()
    finally:
        published.publisher.stop()
    assert published.playable_calls == []


def test_the_rungs_come_from_the_master_playlist_largest_first() -> None:
    master = (
        "#EXTM3U\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=928000,RESOLUTION=360x640,CODECS="avc1.64001e,mp4a.40.2",AUDIO="aud"\n'
        "360p/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=3128000,RESOLUTION=720x1280,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"\n'
        "720p/index.m3u8\n"
    )
    assert master_rungs(master) == (
        Rung("720p", 720, 1280, 3_128_000),
        Rung("360p", 360, 640, 928_000),
    )
