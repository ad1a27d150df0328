"""Media logic: probe an upload, then encode a watermarked rendition and a thumbnail.

Pure functions around the ffmpeg binary (see :func:`ffmpeg_exe`); no AWS here.
Workers download the upload to local disk, call :func:`probe` and :func:`encode`,
and upload what comes back.

Two kinds of failure, because the caller must treat them differently:

* :class:`MediaRejected` -- the file itself is the problem (not a video, damaged,
  cut short). Retrying cannot help; ``.reason`` is a sentence to show the user.
* :class:`MediaProcessingError` -- something on our side failed (timeout, killed,
  disk full, unexpected ffmpeg failure). The job should be retried.

ffmpeg exits 0 on some broken inputs (a front-indexed MP4 cut in half encodes
"successfully" to half its length), so :func:`encode` trusts no exit code alone:
it writes to temporary names, probes what it wrote, and only then renames the
outputs into place.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

RENDITION_NAME = "rendition.mp4"
THUMBNAIL_NAME = "thumbnail.jpg"

# Watermark height and margin as fractions of the rendition's SHORTER side, so a
# portrait frame gets the same mark as a landscape one instead of being covered.
WATERMARK_HEIGHT_FRACTION = 0.08
WATERMARK_MARGIN_FRACTION = 0.03

# A rendition must last as long as its source, give or take this much.
DURATION_TOLERANCE_S = 0.5

# The thumbnail is the frame at min(1 s, duration / 2): 1 s skips fade-ins, and
# half the duration keeps very short clips (0.2 s) inside their frames.
THUMBNAIL_AT_S = 1.0

# Progress callbacks fire when progress moved by this much or this long has passed.
PROGRESS_MIN_STEP = 0.05
PROGRESS_MIN_INTERVAL_S = 1.0

PROBE_TIMEOUT_S = 60.0

# Only the tail of ffmpeg's stderr is kept in memory: the lines we parse
# (errors, -benchmark results) come last, and a damaged file can log megabytes.
_STDERR_TAIL_BYTES = 256 * 1024

_JPEG_MAGIC = b"\xff\xd8"

_NOT_A_VIDEO = "This file is not a video we can read (it may be damaged or not a video at all)."
_CUT_SHORT = (
    "The video seems to be cut short or damaged partway through, so we could not "
    "process all of it. Please upload the complete original file again."
)


class MediaRejected(Exception):
    """The input is not something we can process; ``reason`` is a sentence for people.

    The reason is shown to the user and emailed, so it never contains paths or
    ffmpeg output.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaProcessingError(Exception):
    """Processing failed for a reason that may be transient; the job should be retried.

    Examples: ffmpeg timed out or was killed, the disk is full, or ffmpeg failed
    in a way we cannot blame on the input.
    """


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learned about a media file."""

    duration_s: float
    width: int  # as displayed, i.e. after rotation metadata (and pixel aspect) is applied
    height: int
    video_codec: str
    audio_codec: str | None
    rotation: int  # degrees from the display matrix, normalised to 0..359; 0 if none


@dataclass(frozen=True)
class EncodeResult:
    """The files :func:`encode` produced, and what producing them cost."""

    rendition_path: str  # MP4, H.264 + AAC, moov first
    thumbnail_path: str  # JPEG
    width: int  # of the rendition, from probing it
    height: int
    duration_s: float
    ffmpeg_seconds: float  # ffmpeg's own -benchmark rtime, else the subprocess's wall time
    ffmpeg_maxrss_kb: int | None


@functools.cache
def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary (cached).

    The ``ffmpeg_path`` setting (``VIDLINE_FFMPEG_PATH``) comes first: on Lambda
    it is the layer's ``/opt/bin/ffmpeg``, and the worker's zip has no
    ``imageio_ffmpeg``. Unset, it is the binary of the ``imageio-ffmpeg`` wheel
    (local runs, tests), imported lazily so that importing this module (e.g.
    for the exception classes) works where ffmpeg is not installed.
    """
    from chalicelib.settings import get_settings

    configured = get_settings().ffmpeg_path
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"VIDLINE_FFMPEG_PATH={configured!r} is not an executable file")
        return configured
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def default_watermark_path() -> str:
    """Return the path of the watermark PNG shipped with the library.

    The asset is a 224x44 RGBA PNG (white mark, soft dark outline, transparent
    background), rendered once with ffmpeg's ``drawtext`` and DejaVu Sans Bold;
    Lambda has no fonts, so we ship the picture, not the recipe.
    """
    return str(Path(__file__).parent / "assets" / "watermark.png")


# --------------------------------------------------------------------------- probe

# Anchored at line start: metadata values (titles etc.) are indented under
# "Metadata:" with a "key : value" shape and cannot start like these lines.
_INPUT_RE = re.compile(r"^Input #0, (?P<format>[^ ]+), from ", re.MULTILINE)
_DURATION_RE = re.compile(r"^\s+Duration: (?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)|N/A)")
_STREAM_RE = re.compile(
    r"^\s+Stream #0:(?P<index>\d+)\S*: (?P<kind>Video|Audio|Subtitle|Data|Attachment): "
    r"(?P<codec>[^ ,]+)(?P<rest>.*)$"
)
# " 1920x1080," -- the leading separator and non-zero first digit keep codec
# tags such as "(avc1 / 0x31637661)" from matching.
_SIZE_RE = re.compile(r"[ ,](?P<w>[1-9]\d*)x(?P<h>[1-9]\d*)(?=[ ,\[]|$)")
_SAR_RE = re.compile(r"\[SAR (?P<num>\d+):(?P<den>\d+) ")
_ROTATION_RE = re.compile(r"^\s+Display Matrix: rotation of (?P<deg>-?\d+(?:\.\d+)?) degrees")
# Demuxers that read a single still picture.
_IMAGE_FORMATS = re.compile(r"^(image2|\w+_pipe)$")


@dataclass
class _Stream:
    kind: str
    codec: str
    rest: str
    rotation: float = 0.0

    @property
    def is_cover_art(self) -> bool:
        # Audio files carry album art as a one-frame "video" stream; encoding it
        # would produce a still-picture "video" of garbage, so it does not count.
        return "(attached pic)" in self.rest


def probe(path: str) -> MediaInfo:
    """Describe the media file at ``path``, or reject it with a reason for people.

    Parses the stderr of ``ffmpeg -i`` because imageio-ffmpeg ships no ffprobe.
    Raises :class:`MediaRejected` for an empty file, something ffmpeg cannot
    read, a still image, a file with no video (audio alone, or audio with cover
    art), or one whose duration is unknown or zero. Raises
    :class:`MediaProcessingError` if ffmpeg itself misbehaves, and
    ``FileNotFoundError`` if there is no file.
    """
    if os.path.getsize(path) == 0:
        raise MediaRejected("This file is empty.")
    # Without an output ffmpeg prints the input description and exits 1
    # ("At least one output file must be specified"); the exit code says nothing.
    try:
        completed = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _file_url(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaProcessingError(f"probing took longer than {PROBE_TIMEOUT_S:.0f} s") from exc
    stderr = completed.stderr.decode("utf-8", errors="replace")
    if completed.returncode < 0:
        raise MediaProcessingError(
            f"ffmpeg was killed by {_signal_name(-completed.returncode)} while probing"
        )
    return _parse_probe(stderr)


def _parse_probe(stderr: str) -> MediaInfo:
    """Turn ``ffmpeg -i`` stderr into a MediaInfo, or say why it is not a video."""
    container, duration, streams = _scan_probe_output(stderr)
    videos = [s for s in streams if s.kind == "Video" and not s.is_cover_art]
    audios = [s for s in streams if s.kind == "Audio"]
    if _IMAGE_FORMATS.match(container):
        raise MediaRejected("This file is a still image, not a video.")
    if not videos:
        if any(s.is_cover_art for s in streams):
            raise MediaRejected("This file has no video, only audio with a cover picture.")
        if audios:
            raise MediaRejected("This file has no video, only audio.")
        raise MediaRejected("This file has no video in it.")
    if duration is None:
        raise MediaRejected(
            "We could not tell how long this video is, so we cannot process it "
            "(the file may be damaged or incomplete)."
        )
    if duration <= 0:
        raise MediaRejected("This video has no length, so there is nothing to show.")
    width, height = _display_size(videos[0])
    return MediaInfo(
        duration_s=duration,
        width=width,
        height=height,
        video_codec=videos[0].codec,
        audio_codec=audios[0].codec if audios else None,
        rotation=round(videos[0].rotation) % 360,
    )


def _scan_probe_output(stderr: str) -> tuple[str, float | None, list[_Stream]]:
    """Return input #0's container format, duration (None if unknown) and streams."""
    input_match = _INPUT_RE.search(stderr)
    if input_match is None:
        # ffmpeg could not open it: "moov atom not found", "Invalid data found
        # when processing input" (exit 183) -- unless our machine is the problem.
        if "No space left on device" in stderr or "Cannot allocate memory" in stderr:
            raise MediaProcessingError(f"ffmpeg could not probe: {_last_lines(stderr)}")
        raise MediaRejected(_NOT_A_VIDEO)
    duration: float | None = None
    streams: list[_Stream] = []
    for line in stderr[input_match.end() :].splitlines():
        if (m := _DURATION_RE.match(line)) is not None:
            if duration is None and m["h"] is not None:
                duration = int(m["h"]) * 3600 + int(m["m"]) * 60 + float(m["s"])
        elif (m := _STREAM_RE.match(line)) is not None:
            streams.append(_Stream(kind=m["kind"], codec=m["codec"], rest=m["rest"]))
        elif (m := _ROTATION_RE.match(line)) is not None and streams:
            streams[-1].rotation = float(m["deg"])
    return input_match["format"], duration, streams


def _display_size(video: _Stream) -> tuple[int, int]:
    size = _SIZE_RE.search(video.rest)
    if size is None:
        raise MediaRejected("This video has no picture size we can read (it may be damaged).")
    width, height = int(size["w"]), int(size["h"])
    sar = _SAR_RE.search(video.rest)
    if sar is not None and int(sar["num"]) > 0 and int(sar["den"]) > 0:
        # Non-square pixels (e.g. DVD 720x480 at 32:27): the displayed width differs.
        width = max(1, round(width * int(sar["num"]) / int(sar["den"])))
    if round(video.rotation) % 180 == 90:
        # ffmpeg auto-rotates when decoding, so people see the swapped size.
        width, height = height, width
    return width, height


# ------------------------------------------------------------------------- sizing


def rendition_size(info: MediaInfo, short_side: int = 720) -> tuple[int, int]:
    """Return the (width, height) of the rendition for a source described by ``info``.

    Keeps the aspect ratio and never upscales: the shorter side becomes
    ``min(short_side, source's shorter side)``. Both numbers are even, as
    H.264 in 4:2:0 requires.
    """
    landscape = info.width >= info.height
    long_in, short_in = (info.width, info.height) if landscape else (info.height, info.width)
    short_out = _even_at_most(min(short_side, short_in))
    long_out = min(_even_at_most(long_in), max(2, 2 * round(long_in * short_out / short_in / 2)))
    return (long_out, short_out) if landscape else (short_out, long_out)


def _even_at_most(value: float) -> int:
    return max(2, int(value) // 2 * 2)


# ------------------------------------------------------------------------- encode


def encode(
    source_path: str,
    info: MediaInfo,
    out_dir: str,
    *,
    watermark_path: str,
    short_side: int = 720,
    on_progress: Callable[[float], None] | None = None,
    timeout_s: float = 780.0,
) -> EncodeResult:
    """Encode a source into ``rendition.mp4`` and ``thumbnail.jpg`` in ``out_dir``.

    One ffmpeg process decodes the source once, auto-rotates it, scales it to
    :func:`rendition_size`, overlays the watermark in the bottom-right corner
    (sized from the frame's shorter side), and from that same picture writes an
    H.264/AAC MP4 with the index at the front (+faststart) and a JPEG thumbnail
    of the frame at min(1 s, duration / 2).

    ``on_progress`` receives fractions in 0..1, at most about once a second or
    per 5 %, and 1.0 only once both outputs are validated and in place.

    Raises :class:`MediaRejected` when the input turns out to be damaged or cut
    short, and :class:`MediaProcessingError` on a timeout, a killed ffmpeg, a
    full disk or any other failure; in both cases nothing is left in ``out_dir``.
    """
    width, height = rendition_size(info, short_side)
    finals = [os.path.join(out_dir, name) for name in (RENDITION_NAME, THUMBNAIL_NAME)]
    written: list[str] = []  # every file to delete if anything goes wrong
    try:
        rendition_tmp = _temp_path(out_dir, ".rendition-", ".mp4", written)
        thumbnail_tmp = _temp_path(out_dir, ".thumbnail-", ".jpg", written)
        args = _encode_args(
            source_path,
            info,
            watermark_path=watermark_path,
            size=(width, height),
            rendition_out=rendition_tmp,
            thumbnail_out=thumbnail_tmp,
        )
        run = _run_ffmpeg(args, duration_s=info.duration_s, on_progress=on_progress, timeout_s=timeout_s)
        _raise_for_failed_run(run, timeout_s)
        rendition = _validate_outputs(info, (width, height), rendition_tmp, thumbnail_tmp, run)
        for tmp, final in zip((rendition_tmp, thumbnail_tmp), finals, strict=True):
            written.append(final)
            os.replace(tmp, final)
    except BaseException as exc:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if isinstance(exc, OSError):
            # Our disk or directory failed (ENOSPC, missing out_dir): retryable.
            raise MediaProcessingError(f"could not write the outputs: {exc}") from exc
        raise
    if on_progress is not None:
        on_progress(1.0)
    return EncodeResult(
        rendition_path=finals[0],
        thumbnail_path=finals[1],
        width=rendition.width,
        height=rendition.height,
        duration_s=rendition.duration_s,
        ffmpeg_seconds=run.wall_s if run.bench_rtime_s is None else run.bench_rtime_s,
        ffmpeg_maxrss_kb=run.maxrss_kb,
    )


def _encode_args(
    source_path: str,
    info: MediaInfo,
    *,
    watermark_path: str,
    size: tuple[int, int],
    rendition_out: str,
    thumbnail_out: str,
) -> list[str]:
    width, height = size
    short = min(width, height)
    mark_height = _even_at_most(round(short * WATERMARK_HEIGHT_FRACTION))
    margin = round(short * WATERMARK_MARGIN_FRACTION)
    # The thumbnail branch passes every frame up to the chosen instant (and the
    # first frame, in case the picture starts later) to the image muxer, whose
    # -update 1 rewrites one file per frame: the file ends as the frame at that
    # instant, or the best frame there is when the video stream is shorter than
    # or starts after it. An output-side "-ss T -frames:v 1" instead fails the
    # whole run (exit 234, "Could not open encoder before EOF") when no frame
    # reaches T, e.g. 0.3 s of picture in 5 s of sound; so does trim when the
    # first frame comes after T. The extra JPEGs cost nothing measurable.
    thumbnail_at = min(THUMBNAIL_AT_S, info.duration_s / 2)
    graph = ";".join(
        [
            # 0:V = video that is not cover art; ffmpeg auto-rotates it before this.
            f"[0:V:0]scale={width}:{height},setsar=1[video]",
            f"[1:v]scale=-2:{mark_height}[mark]",
            f"[video][mark]overlay=W-w-{margin}:H-h-{margin},format=yuv420p,split=2[rendition][poster]",
            f"[poster]select='lte(t,{thumbnail_at + 0.001:.3f})+eq(n,0)'[thumbnail]",
        ]
    )
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k"] if info.audio_codec else []
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-y",
        "-xerror",  # stop at the first damaged packet instead of encoding around it
        "-benchmark",
        "-progress",
        "pipe:1",
        "-i",
        _file_url(source_path),
        "-i",
        _file_url(watermark_path),
        "-filter_complex",
        graph,
        # Rendition.
        "-map",
        "[rendition]",
        *audio,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        # The rendition is public: drop phone metadata such as GPS location.
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        _file_url(rendition_out),
        # Thumbnail.
        "-map",
        "[thumbnail]",
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-update",
        "1",
        "-f",
        "image2",
        _file_url(thumbnail_out),
    ]


@dataclass(frozen=True)
class _FfmpegRun:
    returncode: int
    stderr: str
    wall_s: float
    timed_out: bool
    bench_rtime_s: float | None
    maxrss_kb: int | None


_BENCH_RTIME_RE = re.compile(r"^bench: utime=\S+ stime=\S+ rtime=(?P<rtime>\d+(?:\.\d+)?)s", re.MULTILINE)
_BENCH_MAXRSS_RE = re.compile(r"^bench: maxrss=(?P<kb>\d+) ?(?:KiB|kB)", re.MULTILINE)


def _run_ffmpeg(
    args: Sequence[str],
    *,
    duration_s: float,
    on_progress: Callable[[float], None] | None,
    timeout_s: float,
) -> _FfmpegRun:
    """Run ffmpeg (with ``-progress pipe:1``), report progress, enforce the timeout.

    stdout (progress) is read line by line in this thread; stderr goes to a
    temporary file so neither pipe can fill up and stall ffmpeg. A timer kills
    the process at the deadline, which closes stdout and ends the read loop.
    """
    reporter = _ProgressReporter(duration_s, on_progress)
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr_file:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
            )
        except OSError as exc:
            raise MediaProcessingError(f"could not start ffmpeg: {exc}") from exc

        def kill_on_timeout() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, kill_on_timeout)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw_line in proc.stdout:
                reporter.feed(raw_line.decode("ascii", errors="replace").strip())
            returncode = proc.wait()
        finally:
            timer.cancel()
            # Reached with the process still running only if on_progress raised.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        wall_s = time.monotonic() - started
        stderr = _read_tail(stderr_file)
    rtime = _BENCH_RTIME_RE.search(stderr)
    maxrss = _BENCH_MAXRSS_RE.search(stderr)
    return _FfmpegRun(
        returncode=returncode,
        stderr=stderr,
        wall_s=wall_s,
        timed_out=timed_out.is_set(),
        bench_rtime_s=float(rtime["rtime"]) if rtime else None,
        maxrss_kb=int(maxrss["kb"]) if maxrss else None,
    )


class _ProgressReporter:
    """Turns ``-progress`` key=value lines into throttled fraction callbacks."""

    # Progress while ffmpeg runs stays below 1.0; 1.0 means "outputs are ready".
    _RUNNING_CAP = 0.99

    def __init__(self, duration_s: float, on_progress: Callable[[float], None] | None) -> None:
        self._duration_us = duration_s * 1_000_000
        self._on_progress = on_progress
        self._last_fraction = -1.0
        self._last_at = 0.0

    def feed(self, line: str) -> None:
        if self._on_progress is None:
            return
        key, _, value = line.partition("=")
        # out_time_ms is also in microseconds (a historic ffmpeg misnomer); both
        # read "N/A" before the first frame is written.
        if key not in ("out_time_us", "out_time_ms") or not value.isdigit() or self._duration_us <= 0:
            return
        fraction = min(self._RUNNING_CAP, int(value) / self._duration_us)
        now = time.monotonic()
        if fraction <= self._last_fraction:
            return
        if (
            fraction - self._last_fraction < PROGRESS_MIN_STEP
            and now - self._last_at < PROGRESS_MIN_INTERVAL_S
        ):
            return
        self._last_fraction, self._last_at = fraction, now
        self._on_progress(fraction)


# Signs that the input, not our side, broke the run (exit 183 = AVERROR_INVALIDDATA).
_BAD_INPUT_PATTERNS = (
    "Invalid data found when processing input",
    "corrupt input packet",
    "Packet corrupt",
    "moov atom not found",
    "Invalid NAL unit size",
    "error while decoding",
)
_NO_DECODER_PATTERNS = (
    "Decoder not found",
    "no decoder found",
    "Decoding requested, but no decoder",
)


def _raise_for_failed_run(run: _FfmpegRun, timeout_s: float) -> None:
    if run.timed_out:
        raise MediaProcessingError(f"ffmpeg did not finish within {timeout_s:g} s and was killed")
    if run.returncode < 0:
        raise MediaProcessingError(f"ffmpeg was killed by {_signal_name(-run.returncode)}")
    # A full disk can surface with exit 0 (e.g. while writing the trailer) and
    # would otherwise look like a short, "cut off" input.
    if "No space left on device" in run.stderr or "Disk quota exceeded" in run.stderr:
        raise MediaProcessingError("ffmpeg ran out of disk space")
    if run.returncode == 0:
        return
    lowered = run.stderr.lower()
    if any(pattern.lower() in lowered for pattern in _NO_DECODER_PATTERNS):
        raise MediaRejected("This video uses a format we cannot decode.")
    if any(pattern.lower() in lowered for pattern in _BAD_INPUT_PATTERNS):
        raise MediaRejected(_CUT_SHORT)
    raise MediaProcessingError(f"ffmpeg exited with status {run.returncode}: {_last_lines(run.stderr)}")


def _validate_outputs(
    info: MediaInfo,
    size: tuple[int, int],
    rendition_path: str,
    thumbnail_path: str,
    run: _FfmpegRun,
) -> MediaInfo:
    """Check what ffmpeg wrote rather than trust its exit code; probe the rendition."""
    for path in (rendition_path, thumbnail_path):
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            raise MediaProcessingError(
                f"ffmpeg exited 0 but wrote no {os.path.basename(path)}: {_last_lines(run.stderr)}"
            )
    with open(thumbnail_path, "rb") as thumbnail:
        if thumbnail.read(2) != _JPEG_MAGIC:
            raise MediaProcessingError("the thumbnail is not a JPEG")
    try:
        rendition = probe(rendition_path)
    except MediaRejected as exc:
        raise MediaProcessingError(f"the rendition does not probe cleanly: {exc.reason}") from exc
    if rendition.video_codec != "h264" or (rendition.width, rendition.height) != size:
        raise MediaProcessingError(
            f"the rendition is {rendition.video_codec} "
            f"{rendition.width}x{rendition.height}, expected h264 {size[0]}x{size[1]}"
        )
    if (rendition.audio_codec == "aac") != (info.audio_codec is not None):
        raise MediaProcessingError(
            f"the rendition's audio is {rendition.audio_codec}, the source's {info.audio_codec}"
        )
    if rendition.duration_s < info.duration_s - DURATION_TOLERANCE_S:
        # ffmpeg may exit 0 having encoded only the readable part of a damaged file.
        raise MediaRejected(_CUT_SHORT)
    if rendition.duration_s > info.duration_s + DURATION_TOLERANCE_S:
        raise MediaProcessingError(
            f"the rendition lasts {rendition.duration_s:.2f} s, the source {info.duration_s:.2f} s"
        )
    return rendition


# ------------------------------------------------------------------------ helpers


def _file_url(path: str) -> str:
    # "file:" stops ffmpeg from reading a path containing ":" as a protocol.
    return "file:" + os.path.abspath(path)


def _temp_path(out_dir: str, prefix: str, suffix: str, created: list[str]) -> str:
    """Reserve a unique hidden file name in ``out_dir``, recording it in ``created``."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=out_dir)
    os.close(fd)
    created.append(path)
    return path


def _read_tail(stream: IO[bytes]) -> str:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - _STDERR_TAIL_BYTES))
    return stream.read().decode("utf-8", errors="replace")


def _last_lines(stderr: str, count: int = 5) -> str:
    """Summarise ffmpeg's stderr for operators: its last error lines, else last lines."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|failed|invalid", line, re.IGNORECASE)]
    return " | ".join((errors or lines)[-count:])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
