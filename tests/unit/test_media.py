"""Probe and encode real clips with the real ffmpeg.

Clips are generated once per module with ffmpeg's lavfi sources, kept small
so the whole file runs in seconds.
"""

from __future__ import annotations

import http.server
import os
import re
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from chalicelib.media.ffmpeg import source_args
from chalicelib.media.ladder import rung_size
from chalicelib.ports import MediaProcessingError, MediaRejected, MediaSource, ObjectChanged, TranscodeResult
from tests.media_tools import (
    decode_frame,
    ffmpeg,
    ffmpeg_children_of,
    make_clip,
    probe,
    transcode,
    transcoder,
)


def cut_in_half(source: str, target: Path) -> str:
    data = Path(source).read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return str(target)


def encode_clip(
    path: str,
    out_dir: Path,
    *,
    on_progress: Callable[[float], None] | None = None,
    timeout_s: float = 780.0,
) -> TranscodeResult:
    """Probe and transcode ``path`` into ``out_dir`` with the shipped watermark, as a worker does."""
    return transcode(path, out_dir, on_progress=on_progress, timeout_s=timeout_s)


def mp4_size(result: TranscodeResult) -> tuple[int, int]:
    return (result.mp4_rung.width, result.mp4_rung.height)


def top_level_boxes(path: str) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    boxes: list[str] = []
    with open(path, "rb") as mp4:
        while header := mp4.read(8):
            size, kind = struct.unpack(">I4s", header)
            boxes.append(kind.decode("latin-1"))
            if size == 1:  # 64-bit size follows the type
                (size,) = struct.unpack(">Q", mp4.read(8))
                mp4.seek(size - 16, os.SEEK_CUR)
            elif size == 0:  # box runs to the end of the file
                break
            else:
                mp4.seek(size - 8, os.SEEK_CUR)
    return boxes


def child_pids() -> list[int]:
    """PIDs of this process's ffmpeg children, running or zombie."""
    return ffmpeg_children_of(os.getpid())


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def landscape_clip(clips: Path) -> str:
    return str(make_clip(clips / "landscape.mp4", seconds=2))


@pytest.fixture(scope="module")
def silent_clip(clips: Path) -> str:
    return str(make_clip(clips / "silent.mp4", seconds=1, size="320x240", audio=False))


@pytest.fixture(scope="module")
def tiny_clip(clips: Path) -> str:
    return str(make_clip(clips / "tiny.mp4", seconds=0.2, size="320x180"))


@pytest.fixture(scope="module")
def rotated_clip(clips: Path, landscape_clip: str) -> str:
    """A landscape-coded clip that players show in portrait, like a phone video."""
    path = clips / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", landscape_clip, "-c", "copy", str(path))
    return str(path)


@pytest.fixture(scope="module")
def long_clip(clips: Path) -> str:
    """Big enough that encoding takes over a second."""
    return str(make_clip(clips / "long.mp4", seconds=4, size="1280x720"))


@pytest.fixture(scope="module")
def landscape_encoded(landscape_clip: str, tmp_path_factory: pytest.TempPathFactory) -> TranscodeResult:
    return encode_clip(landscape_clip, tmp_path_factory.mktemp("landscape-out"))


def build_audio_only(clips: Path) -> str:
    path = clips / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))
    return str(path)


def build_audio_with_cover_art(clips: Path) -> str:
    # An M4A: an MP3 is not a container we accept at all.
    cover, path = clips / "cover.jpg", clips / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=200x200", "-frames:v", "1", str(cover))
    ffmpeg(
        "-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover),
        "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "copy",
        "-disposition:v:0", "attached_pic", str(path),
    )  # fmt: skip
    return str(path)


def build_empty(clips: Path) -> str:
    path = clips / "empty.mp4"
    path.write_bytes(b"")
    return str(path)


def build_text(clips: Path) -> str:
    path = clips / "notes.mp4"
    path.write_text("Shopping list: milk, eggs, a better video.\n")
    return str(path)


def build_end_indexed_cut_in_half(clips: Path) -> str:
    # ffmpeg writes the index (moov) last by default, so the first half has none.
    whole = str(make_clip(clips / "end-indexed.mp4", seconds=2))
    return cut_in_half(whole, clips / "end-indexed-half.mp4")


def build_still_image(clips: Path) -> str:
    path = clips / "photo.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", str(path))
    return str(path)


# ------------------------------------------------------------------------- probe


def test_probe_describes_a_clip_with_audio(landscape_clip: str) -> None:
    info = probe(landscape_clip)

    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert (info.width, info.height, info.rotation) == (640, 360, 0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def test_probe_reports_display_size_of_a_rotated_clip(rotated_clip: str) -> None:
    info = probe(rotated_clip)

    assert (info.width, info.height) == (360, 640)
    assert info.rotation == 90


def test_probe_reports_no_audio_for_a_silent_clip(silent_clip: str) -> None:
    assert probe(silent_clip).audio_codec is None


@pytest.mark.parametrize(
    "build",
    [
        build_empty,
        build_text,
        build_audio_only,
        build_audio_with_cover_art,
        build_end_indexed_cut_in_half,
        build_still_image,
    ],
    ids=lambda build: build.__name__.removeprefix("build_"),
)
def test_probe_rejects_what_is_not_a_video(build: Callable[[Path], str], tmp_path: Path) -> None:
    path = build(tmp_path)

    with pytest.raises(MediaRejected) as rejected:
        probe(path)

    reason = rejected.value.reason  # shown to the user and emailed
    assert reason.endswith(".")
    assert len(reason.split()) >= 4
    assert str(tmp_path) not in reason
    assert not any(jargon in reason.lower() for jargon in ("ffmpeg", "moov", "stream", "codec"))


def test_probe_names_the_problem_for_audio(tmp_path: Path) -> None:
    with pytest.raises(MediaRejected, match="only audio"):
        probe(build_audio_only(tmp_path))
    with pytest.raises(MediaRejected, match="only audio with a cover picture"):
        probe(build_audio_with_cover_art(tmp_path))


def test_probe_of_a_missing_file_is_not_blamed_on_the_user(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(str(tmp_path / "gone.mp4"))


# ----------------------------------------------------------------- rendition size


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ((1920, 1080), (1280, 720)),  # landscape: shorter side to 720
        ((1080, 1920), (720, 1280)),  # portrait: the width is the shorter side
        ((640, 360), (640, 360)),  # smaller than 720p: never upscaled
        ((641, 361), (640, 360)),  # odd sizes become even
        ((3840, 1601), (1726, 720)),  # odd aspect: long side rounded to even
        ((1000, 1000), (720, 720)),
    ],
)
def test_rendition_size(source: tuple[int, int], expected: tuple[int, int]) -> None:
    assert rung_size(*source, 720) == expected


def test_rendition_size_takes_a_smaller_short_side() -> None:
    assert rung_size(1920, 1080, 480) == (854, 480)


# ------------------------------------------------------------------------ encode


def test_encode_writes_a_web_ready_rendition_and_a_thumbnail(
    landscape_clip: str, landscape_encoded: TranscodeResult
) -> None:
    result = landscape_encoded
    rendition = probe(result.mp4_path)

    assert Path(result.mp4_path).name == "rendition.mp4"
    assert (rendition.video_codec, rendition.audio_codec) == ("h264", "aac")
    assert mp4_size(result) == (rendition.width, rendition.height) == (640, 360)
    assert result.duration_s == pytest.approx(probe(landscape_clip).duration_s, abs=0.1)
    boxes = top_level_boxes(result.mp4_path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart: playable while downloading
    assert Path(result.thumbnail_path).read_bytes()[:2] == b"\xff\xd8"
    assert sorted(os.listdir(Path(result.mp4_path).parent)) == [
        "hls",
        "rendition.mp4",
        "thumbnail.jpg",
    ]


def test_encode_reports_ffmpeg_cost(landscape_encoded: TranscodeResult) -> None:
    assert 0 < landscape_encoded.ffmpeg_seconds < 30
    assert landscape_encoded.ffmpeg_maxrss_kb is not None
    assert landscape_encoded.ffmpeg_maxrss_kb > 1000


def test_encode_burns_the_watermark_into_the_bottom_right(
    landscape_clip: str, landscape_encoded: TranscodeResult
) -> None:
    size = mp4_size(landscape_encoded)
    watermarked = decode_frame(landscape_encoded.mp4_path, size, frame_number=30)
    original = decode_frame(landscape_clip, size, frame_number=30)

    difference = np.abs(watermarked - original).mean(axis=2)
    height, width = difference.shape
    corner = np.zeros_like(difference, dtype=bool)
    corner[int(height * 0.8) :, int(width * 0.6) :] = True
    assert difference[corner].mean() > 8  # the mark is there...
    assert difference[~corner].mean() < 3  # ...and only there; the rest is just re-encoding
    rows, cols = np.nonzero(difference > 60)
    assert len(rows) > 200
    assert corner[rows, cols].all()


def test_thumbnail_is_the_frame_at_one_second(landscape_encoded: TranscodeResult) -> None:
    size = mp4_size(landscape_encoded)
    thumbnail = decode_frame(landscape_encoded.thumbnail_path, size, frame_number=0)

    def distance(frame_number: int) -> float:
        frame = decode_frame(landscape_encoded.mp4_path, size, frame_number=frame_number)
        return float(np.abs(thumbnail - frame).mean())

    # testsrc2 moves every frame; JPEG and H.264 losses stay well below that.
    assert distance(30) < 4
    assert distance(30) < distance(15) / 2
    assert distance(30) < distance(59) / 2


def test_encode_keeps_phone_rotation_and_portrait_size(rotated_clip: str, tmp_path: Path) -> None:
    result = encode_clip(rotated_clip, tmp_path)

    assert mp4_size(result) == (360, 640)
    thumbnail = decode_frame(result.thumbnail_path, (360, 640), frame_number=0)
    assert thumbnail.shape == (640, 360, 3)


def test_encode_without_audio_has_no_audio_stream(silent_clip: str, tmp_path: Path) -> None:
    result = encode_clip(silent_clip, tmp_path)

    assert probe(result.mp4_path).audio_codec is None
    assert mp4_size(result) == (320, 240)


def test_encode_makes_a_thumbnail_of_a_very_short_clip(tiny_clip: str, tmp_path: Path) -> None:
    result = encode_clip(tiny_clip, tmp_path)

    assert Path(result.thumbnail_path).read_bytes()[:2] == b"\xff\xd8"
    thumbnail = decode_frame(result.thumbnail_path, (320, 180), frame_number=0)
    assert thumbnail.shape == (180, 320, 3)
    assert result.duration_s == pytest.approx(0.2, abs=0.05)


@pytest.mark.parametrize(
    ("sound_s", "picture_args"),
    [
        # 0.3 s of picture in 3 s of sound: no frame at the 1 s thumbnail instant.
        (3, ["-f", "lavfi", "-i", "testsrc2=size=320x180:duration=0.3"]),
        # The picture starts at 0.5 s in 0.6 s of sound: no frame by the 0.3 s instant.
        (0.6, ["-itsoffset", "0.5", "-f", "lavfi", "-i", "testsrc2=size=320x180:duration=0.1"]),
    ],
    ids=["picture-ends-early", "picture-starts-late"],
)
def test_encode_makes_a_thumbnail_when_picture_and_sound_do_not_line_up(
    sound_s: float, picture_args: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "source.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=duration={sound_s}",
        *picture_args,
        "-map", "1:v", "-map", "0:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path),
    )  # fmt: skip
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    result = encode_clip(str(path), out_dir)

    assert Path(result.thumbnail_path).read_bytes()[:2] == b"\xff\xd8"
    assert result.duration_s == pytest.approx(sound_s, abs=0.1)


def test_encode_reports_increasing_progress_ending_at_one(long_clip: str, tmp_path: Path) -> None:
    seen: list[float] = []

    encode_clip(long_clip, tmp_path, on_progress=seen.append)

    assert len(seen) >= 2
    assert all(0 <= value <= 1 for value in seen)
    assert seen == sorted(set(seen))  # strictly increasing
    assert seen[-1] == 1.0
    assert seen[0] < 1.0


def test_front_indexed_mp4_cut_in_half_is_rejected_not_half_encoded(clips: Path, tmp_path: Path) -> None:
    # With the index at the front, the first half still probes as a 2 s video;
    # ffmpeg without -xerror would "successfully" encode 1 s of it.
    whole = str(make_clip(clips / "front-indexed.mp4", seconds=2, faststart=True))
    half = cut_in_half(whole, clips / "front-indexed-half.mp4")

    with pytest.raises(MediaRejected) as rejected:
        encode_clip(half, tmp_path)

    assert "cut short" in rejected.value.reason
    assert os.listdir(tmp_path) == []


def test_encode_timeout_kills_ffmpeg_and_leaves_nothing(long_clip: str, tmp_path: Path) -> None:
    started = time.monotonic()

    with pytest.raises(MediaProcessingError, match="did not finish"):
        encode_clip(long_clip, tmp_path, timeout_s=0.3)

    assert time.monotonic() - started < 0.9  # stopped at the deadline, not left to finish
    assert os.listdir(tmp_path) == []
    assert child_pids() == []  # killed and reaped: no zombie


def test_a_failing_progress_callback_stops_ffmpeg(long_clip: str, tmp_path: Path) -> None:
    class ProgressStoreDown(Exception):
        pass

    raised_at: list[float] = []

    def on_progress(fraction: float) -> None:
        raised_at.append(time.monotonic())
        raise ProgressStoreDown

    with pytest.raises(ProgressStoreDown):
        encode_clip(long_clip, tmp_path, on_progress=on_progress)

    assert time.monotonic() - raised_at[0] < 0.4  # ffmpeg was stopped, not waited for
    assert os.listdir(tmp_path) == []
    assert child_pids() == []


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Lower RLIMIT_FSIZE for children started while it is set; restored afterwards."""
    original = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(max_bytes: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, original[1]))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, original)


def test_encode_treats_a_killed_ffmpeg_as_retryable(
    long_clip: str, tmp_path: Path, file_size_limit: Callable[[int], None]
) -> None:
    # Writing past RLIMIT_FSIZE sends ffmpeg SIGXFSZ (subprocess restores its
    # default action, which Python itself ignores), killing it mid-encode.
    file_size_limit(64 * 1024)

    with pytest.raises(MediaProcessingError, match="killed by SIGXFSZ"):
        encode_clip(long_clip, tmp_path)

    assert os.listdir(tmp_path) == []


# ------------------------------------------------------ reading the source over HTTP


class SourceServer:
    """A presigned-GET stand-in on 127.0.0.1: serves one file (with Range), records
    the If-Match headers it got, and can misbehave as ``mode`` says:
    "whole", "half" (sends half the file, then drops the connection) or "412"."""

    def __init__(self, data: bytes, mode: str) -> None:
        self.data, self.mode = data, mode
        self.if_match: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.if_match.append(self.headers.get("If-Match"))
                if server.mode == "412":
                    self.send_response(412)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ranged = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                start = int(ranged[1]) if ranged else 0
                body = server.data[start:]
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if ranged:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}"
                    )
                self.end_headers()
                if server.mode == "half":
                    self.wfile.write(body[: max(0, len(server.data) // 2 - start)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def source(self, etag: str = "abc") -> MediaSource:
        host, port = self.httpd.server_address[:2]
        return MediaSource(
            f"http://{host!s}:{port}/uploads/source?X-Amz-Signature=x", (("If-Match", f'"{etag}"'),)
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[[str, str], SourceServer]]:
    servers: list[SourceServer] = []

    def start(path: str, mode: str) -> SourceServer:
        servers.append(SourceServer(Path(path).read_bytes(), mode))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def front_indexed_clip(clips: Path) -> str:
    return str(make_clip(clips / "front-indexed-4s.mp4", seconds=4, faststart=True))


def test_a_source_over_http_is_read_with_its_headers(
    serve: Callable[[str, str], SourceServer], front_indexed_clip: str, tmp_path: Path
) -> None:
    server = serve(front_indexed_clip, "whole")
    adapter = transcoder()

    info = adapter.probe(server.source())
    result = adapter.transcode(
        server.source(), info, str(tmp_path), ladder=(360,), mp4_short_side=720, segment_s=1,
        max_duration_s=60, max_pixels=4096 * 4096,
    )  # fmt: skip

    assert result.duration_s == pytest.approx(4.0, abs=0.1)
    assert server.if_match and set(server.if_match) == {'"abc"'}


def test_a_source_read_that_breaks_midway_is_retryable_and_leaves_nothing(
    serve: Callable[[str, str], SourceServer], front_indexed_clip: str, tmp_path: Path
) -> None:
    # Without the network rows the damaged half would read as "cut short": permanent.
    info = probe(front_indexed_clip)
    server = serve(front_indexed_clip, "half")

    with pytest.raises(MediaProcessingError, match="reading the source broke off"):
        transcoder().transcode(
            server.source(), info, str(tmp_path), ladder=(360,), mp4_short_side=720, segment_s=1,
            max_duration_s=60, max_pixels=4096 * 4096,
        )  # fmt: skip

    assert os.listdir(tmp_path) == []
    assert child_pids() == []


def test_a_replaced_source_answering_412_is_object_changed(
    serve: Callable[[str, str], SourceServer], front_indexed_clip: str, tmp_path: Path
) -> None:
    server = serve(front_indexed_clip, "412")
    info = probe(front_indexed_clip)

    with pytest.raises(ObjectChanged):
        transcoder().probe(server.source())
    with pytest.raises(ObjectChanged):
        transcoder().transcode(
            server.source(), info, str(tmp_path), ladder=(360,), mp4_short_side=720, segment_s=1,
            max_duration_s=60, max_pixels=4096 * 4096,
        )  # fmt: skip
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("location", "protocols"),
    [
        ("/tmp/job/source", "file"),
        ("http://127.0.0.1:9000/uploads/k?X-Amz-Signature=s", "http,tcp"),
        ("https://uploads.s3.eu-west-1.amazonaws.com/k?X-Amz-Signature=s", "https,tls,tcp"),
    ],
)
def test_the_protocols_a_source_may_open_come_from_its_scheme(location: str, protocols: str) -> None:
    headers = (("If-Match", '"e1"'), ("X-Extra", "1"))

    args = source_args(MediaSource(location, headers))

    assert args[args.index("-protocol_whitelist") + 1] == protocols
    if protocols == "file":
        assert "-headers" not in args and args[-1] == "file:/tmp/job/source"
    else:
        assert args[args.index("-headers") + 1] == 'If-Match: "e1"\r\nX-Extra: 1\r\n'
        assert args[-1] == location


def test_a_source_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="ftp"):
        source_args(MediaSource("ftp://example.com/x"))


def test_a_job_folder_that_already_has_hls_outputs_is_left_alone(landscape_clip: str, tmp_path: Path) -> None:
    earlier = tmp_path / "hls" / "360p" / "index.m3u8"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("#EXTM3U\n")

    with pytest.raises(MediaProcessingError, match="could not write the outputs"):
        encode_clip(landscape_clip, tmp_path)

    assert earlier.read_text() == "#EXTM3U\n"  # not ours to remove
    assert sorted(os.listdir(tmp_path)) == ["hls"]
