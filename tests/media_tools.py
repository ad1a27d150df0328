"""Generated clips and decoded frames for tests, made with the bundled ffmpeg."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from chalicelib.media import FfmpegTranscoder, default_watermark_path, find_ffmpeg
from chalicelib.ports import MediaInfo, MediaSource, TranscodeResult

Frame = npt.NDArray[np.int16]


def ffmpeg_exe() -> str:
    """The ffmpeg binary tests run: the imageio-ffmpeg wheel's, the worker's default."""
    return find_ffmpeg()


def ffmpeg(*args: str) -> bytes:
    """Run ffmpeg quietly, fail loudly, and return its stdout."""
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        capture_output=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def ffmpeg_children_of(pid: int) -> list[int]:
    """PIDs of the ffmpeg processes whose parent is ``pid``, running or zombie (Linux /proc).

    Only ffmpeg: a test session has helpers of its own running (Playwright's
    driver, for one).
    """
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # "pid (command) state ppid ...": the command may contain spaces.
            command = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and command.startswith("ffmpeg"):
                children.append(int(entry))
    return children


def make_clip(
    path: Path,
    *,
    seconds: float,
    size: str = "640x360",
    audio: bool = True,
    faststart: bool = False,
) -> Path:
    """Write a test-pattern H.264 clip (plus a sine tone when ``audio``) to ``path``."""
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        codecs += ["-c:a", "aac"]
    flags = ["-movflags", "+faststart"] if faststart else []
    ffmpeg(*inputs, *codecs, *flags, str(path))
    return path


def decode_frame(
    path: str, size: tuple[int, int], *, frame_number: int, via: tuple[int, int] | None = None
) -> Frame:
    """Decode one frame of ``path``, scaled to ``size`` (through ``via`` first, if given), as RGB."""
    width, height = size
    scales = ([f"scale={via[0]}:{via[1]}"] if via else []) + [f"scale={width}:{height}"]
    raw = ffmpeg(
        "-i",
        path,
        "-vf",
        ",".join([f"select=eq(n\\,{frame_number})", *scales]),
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    )
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).astype(np.int16)


# ------------------------------------------------------------------ hostile files


def set_mkv_header_duration(path: Path, seconds: float) -> Path:
    """Overwrite the Segment Duration a Matroska file states, leaving its content alone.

    ffmpeg writes Duration (EBML ID 0x4489) as an 8-byte float of milliseconds
    (the default TimestampScale), so the element is ``44 89 88`` plus 8 bytes.
    """
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0 and data.count(b"\x44\x89\x88") == 1, "expected one 8-byte Duration element"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    path.write_bytes(bytes(data))
    return path


def make_resolution_bomb(path: Path, *, small: int = 64, small_frames: int = 30, big: int = 8192) -> Path:
    """An MKV whose H.264 stream is ``small_frames`` small frames, then a huge one.

    The header (and the probe) describe the first frames only. Two raw Annex-B
    streams concatenated are one valid stream: the second brings its own SPS.
    """
    parts = []
    for name, size, frames, source in (
        ("small", small, small_frames, "testsrc2="),
        ("big", big, 1, "color=c=blue:"),
    ):
        part = path.with_name(f"{path.stem}-{name}.h264")
        ffmpeg(
            "-f", "lavfi", "-i", f"{source}size={size}x{size}:rate=30",
            "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-f", "h264", str(part),
        )  # fmt: skip
        parts.append(part.read_bytes())
        part.unlink()
    raw = path.with_suffix(".h264")
    raw.write_bytes(b"".join(parts))
    ffmpeg("-r", "30", "-i", str(raw), "-c", "copy", str(path))
    raw.unlink()
    return path


_MOV_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def make_reference_movie(source: Path, path: Path, *, target_name: str) -> Path:
    """A QuickTime reference movie: ``source``'s index with its samples left in another file.

    Keeps only ``ftyp`` and ``moov`` of the self-contained ``source`` (a MOV
    with its index at the end, so the sample offsets stay right) and replaces
    each track's data reference with a Mac alias to ``target_name`` in the same
    folder, the form ffmpeg's mov demuxer can follow (``-enable_drefs 1``).
    """

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(payload), kind) + payload

    def alias_dref() -> bytes:
        # The alias record as mov_read_dref reads it: volume, file name, one
        # level up from the alias and one down to the target, then an
        # absolute path (record type 2) and the end marker (-1).
        alias_path = f"/Volumes/Elsewhere/{target_name}".encode()
        record = b"".join(
            [
                bytes(10), bytes([0]), bytes(27), bytes(12),
                bytes([len(target_name)]), target_name.encode().ljust(63, b"\0"),
                bytes(16), struct.pack(">HH", 1, 1), bytes(16),
                struct.pack(">HH", 2, len(alias_path)), alias_path, bytes(len(alias_path) % 2),
                struct.pack(">hH", -1, 0),
            ]
        )  # fmt: skip
        entry = struct.pack(">I4sI", 12 + len(record), b"alis", 0) + record
        return box(b"dref", struct.pack(">II", 0, 1) + entry)

    def rebuild(data: bytes, top: bool) -> bytes:
        out, offset = b"", 0
        while offset < len(data):
            size, kind = struct.unpack(">I4s", data[offset : offset + 8])
            payload = data[offset + 8 : offset + size]
            if kind == b"dref":
                out += alias_dref()
            elif kind in _MOV_CONTAINER_BOXES:
                out += box(kind, rebuild(payload, top=False))
            elif not top or kind == b"ftyp":
                out += data[offset : offset + size]
            offset += size
        return out

    path.write_bytes(rebuild(source.read_bytes(), top=True))
    return path


# ------------------------------------------------------------- the adapter


def transcoder() -> FfmpegTranscoder:
    """The adapter as the container builds it by default: the wheel's ffmpeg, the shipped mark."""
    return FfmpegTranscoder(ffmpeg_exe(), default_watermark_path())


def probe(path: str) -> MediaInfo:
    """Probe a local file as the worker probes its source."""
    return transcoder().probe(MediaSource(path))


def transcode(
    path: str,
    out_dir: Path,
    *,
    info: MediaInfo | None = None,
    ladder: tuple[int, ...] = (720, 360),
    mp4_short_side: int = 720,
    segment_s: float = 1.0,
    max_duration_s: float = 30 * 60,
    max_pixels: int = 4096 * 4096,
    on_progress: Callable[[float], None] | None = None,
    timeout_s: float = 120.0,
) -> TranscodeResult:
    """Probe (unless ``info`` is given) and transcode ``path`` into ``out_dir``, as a worker does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return transcoder().transcode(
        MediaSource(path),
        info or probe(path),
        str(out_dir),
        ladder=ladder,
        mp4_short_side=mp4_short_side,
        segment_s=segment_s,
        max_duration_s=max_duration_s,
        max_pixels=max_pixels,
        on_progress=on_progress,
        timeout_s=timeout_s,
    )


def make_noisy_clip(path: Path, *, seconds: float, crf: int = 16, size: str = "640x360") -> Path:
    """A clip with noise in every frame, so it is big for its length (about 5.5 MB a
    second at 640x360 and crf 16): a real video that spans several upload parts."""
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds},noise=alls=60:allf=t"),
        *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-c:a", "aac"),
        str(path),
    )
    return path
