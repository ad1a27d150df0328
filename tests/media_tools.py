"""Generated clips and decoded frames for tests, made with the bundled ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from chalicelib.media import ffmpeg_exe

Frame = npt.NDArray[np.int16]


def ffmpeg(*args: str) -> bytes:
    """Run ffmpeg quietly, fail loudly, and return its stdout."""
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        capture_output=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


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


def decode_frame(path: str, size: tuple[int, int], *, frame_number: int) -> Frame:
    """Decode one frame of ``path``, scaled to ``size``, as an RGB array."""
    width, height = size
    raw = ffmpeg(
        "-i",
        path,
        "-vf",
        f"select=eq(n\\,{frame_number}),scale={width}:{height}",
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    )
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).astype(np.int16)
