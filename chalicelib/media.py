"""Media logic: probe an upload, then encode a watermarked rendition and a thumbnail.

Pure functions around the ffmpeg binary (see :func:`ffmpeg_exe`); no AWS here.
Workers download the upload to local disk, call :func:`probe` and :func:`encode`,
and upload what comes back.

Two kinds of failure, because the caller must treat them differently:

* :class:`MediaRejected` -- the file itself is the problem (not a video, damaged,
  cut short, over a limit). Retrying cannot help; ``.reason`` is a sentence to
  show the user.
* :class:`MediaProcessingError` -- something on our side failed (timeout, killed,
  disk full, unexpected ffmpeg failure). The job should be retried.
  :func:`classify_ffmpeg_run` is the one table that sorts ffmpeg's endings into
  these two.

Uploads are untrusted, and ffmpeg picks a demuxer from the content, not the
name; some demuxers (DASH, HLS, concat, IMF, SDP, a QuickTime reference movie)
open the files or addresses the content names. So every input is opened with
an allow-list of demuxers (:data:`SOURCE_FORMATS`) and of protocols
(:data:`LOCAL_PROTOCOLS`), a QuickTime file's external tracks are never
followed, every decoded frame is capped in pixels, and decoding stops at the
duration limit whatever the header says.

ffmpeg exits 0 on some broken inputs (a front-indexed MP4 cut in half encodes
"successfully" to half its length), so :func:`encode` trusts no exit code alone:
it writes to temporary names, probes what it wrote, and only then renames the
outputs into place.

Every ffmpeg is started by :func:`run_ffmpeg`, which has the kernel kill it if
the thread that started it dies (see :func:`_die_with_starting_thread`), so a
crashed worker leaves no ffmpeg behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

RENDITION_NAME = "rendition.mp4"
THUMBNAIL_NAME = "thumbnail.jpg"

# The demuxers an upload may be opened with: the containers behind the content
# types we accept (settings.allowed_content_types). video/mp4 and
# video/quicktime are ffmpeg's "mov,mp4,m4a,3gp,3g2,mj2" demuxer, video/webm
# and video/x-matroska its "matroska,webm". Anything else ffmpeg might detect
# in the content (dash, hls, concat, imf, sdp, image2, ...) is refused.
SOURCE_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")

# What an input may open: local files only ("data:" URIs, network addresses
# and everything else are refused). Streaming the source from a presigned URL
# would add "https", "tls" and "tcp" here.
LOCAL_PROTOCOLS = ("file",)

# Watermark height and margin as fractions of the rendition's SHORTER side, so a
# portrait frame gets the same mark as a landscape one instead of being covered.
WATERMARK_HEIGHT_FRACTION = 0.08
WATERMARK_MARGIN_FRACTION = 0.03

# A rendition must last as long as its source, give or take this much. Decoding
# stops at the duration limit plus this much, and a rendition longer than the
# limit plus half of it reached the cap: the video is over the limit.
DURATION_TOLERANCE_S = 0.5

# The thumbnail is the frame at min(1 s, duration / 2): 1 s skips fade-ins, and
# half the duration keeps very short clips (0.2 s) inside their frames.
THUMBNAIL_AT_S = 1.0

# The most frames a second a rendition gets: with the duration cap this bounds
# what any file costs to encode.
MAX_FRAME_RATE = 60

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
_NOT_AN_ACCEPTED_CONTAINER = "This file is not a video container we accept (MP4, MOV, MKV or WebM)."
_REFERS_TO_OTHER_FILES = (
    "This file is a playlist or manifest that refers to other files, not a video "
    "container we accept (MP4, MOV, MKV or WebM). Please upload the video file itself."
)
_EXTERNAL_TRACKS = (
    "This movie refers to other files for its picture or sound instead of containing "
    "them. Please export it as a self-contained MP4 or MOV file and upload that."
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

    duration_s: float  # as the header says: the file may hold more or less
    width: int  # as displayed, i.e. after rotation metadata (and pixel aspect) is applied
    height: int
    video_codec: str
    audio_codec: str | None
    rotation: int  # degrees from the display matrix, normalised to 0..359; 0 if none
    # The demuxer that read it, as ffmpeg names it ("mov,mp4,m4a,3gp,3g2,mj2",
    # "matroska,webm"); encode forces the same one. Empty if unknown.
    container: str = ""


@dataclass(frozen=True)
class EncodeResult:
    """The files :func:`encode` produced, and what producing them cost."""

    rendition_path: str  # MP4, H.264 + AAC, moov first
    thumbnail_path: str  # JPEG
    width: int  # of the rendition, from probing it
    height: int
    duration_s: float  # decoded: the true length, whatever the source's header said
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


# ------------------------------------------------------------------ untrusted input


def untrusted_input_args(
    url: str,
    *,
    container: str = "",
    protocols: Sequence[str] = LOCAL_PROTOCOLS,
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> list[str]:
    """The ffmpeg arguments that open an uploaded file at ``url`` (ending with ``-i url``).

    * Only the demuxers in :data:`SOURCE_FORMATS` may read it, and only
      ``protocols`` may be opened (by it or anything it names).
    * ``container`` (the probe's :attr:`MediaInfo.container`) forces that
      demuxer. For QuickTime it also turns off external tracks (``dref``
      entries pointing at other files) and absolute alias paths: ffmpeg's
      defaults, made explicit. These options exist only for that demuxer, and
      ffmpeg refuses an option the demuxer does not take, so they can be set
      only once the probe has named it.
    * ``max_pixels`` caps every decoded frame, not just the first one the
      header describes (with ``-xerror`` a bigger frame stops ffmpeg).
    * ``max_duration_s`` stops reading there, whatever the header claims.
    """
    args = ["-format_whitelist", ",".join(SOURCE_FORMATS), "-protocol_whitelist", ",".join(protocols)]
    demuxer = container.split(",")[0]
    if demuxer:
        args += ["-f", demuxer]
    if demuxer == "mov":
        args += ["-enable_drefs", "0", "-use_absolute_path", "0"]
    if max_pixels is not None:
        args += ["-max_pixels", str(max_pixels)]
    if max_duration_s is not None:
        args += ["-t", f"{max_duration_s:.3f}"]
    return [*args, "-i", url]


# --------------------------------------------------------------------------- probe

# Anchored at line start: metadata values (titles etc.) are indented under
# "Metadata:" with a "key : value" shape and cannot start like these lines.
_INPUT_RE = re.compile(r"^Input #0, (?P<format>[^ ]+), from ", re.MULTILINE)
_DURATION_RE = re.compile(r"^\s+Duration: (?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)|N/A)")
# "Stream #0:1[0x2](und): Audio: ...", at debug level with ", 2, 1/44100"
# (frames probed, time base) before the colon.
_STREAM_RE = re.compile(
    r"^\s+Stream #0:(?P<index>\d+)[^:]*: (?P<kind>Video|Audio|Subtitle|Data|Attachment): "
    r"(?P<codec>[^ ,]+)(?P<rest>.*)$"
)
# " 1920x1080," -- the leading separator and non-zero first digit keep codec
# tags such as "(avc1 / 0x31637661)" from matching.
_SIZE_RE = re.compile(r"[ ,](?P<w>[1-9]\d*)x(?P<h>[1-9]\d*)(?=[ ,\[]|$)")
_SAR_RE = re.compile(r"\[SAR (?P<num>\d+):(?P<den>\d+) ")
_ROTATION_RE = re.compile(r"^\s+Display Matrix: rotation of (?P<deg>-?\d+(?:\.\d+)?) degrees")


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


def probe(path: str, *, max_pixels: int | None = None) -> MediaInfo:
    """Describe the media file at ``path``, or reject it with a reason for people.

    ``max_pixels`` caps the frames the probe decodes to learn the streams, so
    a huge first frame costs no memory here: it is rejected with the pixel
    cap's reason.

    Parses the stderr of ``ffmpeg -i`` because imageio-ffmpeg ships no ffprobe.
    The file is opened as :func:`untrusted_input_args` says: a playlist or
    manifest, any other container we do not accept, or a QuickTime reference
    movie is rejected having read nothing but itself (ffmpeg follows no
    QuickTime external track by default, and the probe cannot say so
    explicitly before it knows the demuxer: it rejects the file when ffmpeg
    reports skipping one). Raises
    :class:`MediaRejected` for those, an empty file, something ffmpeg cannot
    read, a file with no video (audio alone, or audio with cover art), or one
    whose duration is unknown or zero. Raises :class:`MediaProcessingError` if
    ffmpeg itself misbehaves, and ``FileNotFoundError`` if there is no file.
    """
    if os.path.getsize(path) == 0:
        raise MediaRejected("This file is empty.")
    # Debug level adds the line naming the demuxer ffmpeg detected ("Format
    # dash probed with ..."), so a refusal can say what the file was; a probe
    # logs about a hundred lines at this level.
    args = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "debug",
        *untrusted_input_args(_file_url(path), max_pixels=max_pixels),
    ]
    run = run_ffmpeg(args, timeout_s=PROBE_TIMEOUT_S)
    if run.returncode > 0 and _INPUT_RE.search(run.stderr) is not None:
        # Without an output ffmpeg exits 1 once the input is open ("At least
        # one output file must be specified"): that status means nothing.
        run = dataclasses.replace(run, returncode=0)
    verdict = classify_ffmpeg_run(run, max_pixels=max_pixels)
    if verdict is not None:
        raise verdict
    if any(pattern in run.stderr for pattern in _PIXEL_CAP):
        # The decoder refused the first frames, so their size is unknown too.
        raise MediaRejected(_pixel_cap_reason(max_pixels))
    return _parse_probe(run.stderr)


def _parse_probe(stderr: str) -> MediaInfo:
    """Turn ``ffmpeg -i`` stderr into a MediaInfo, or say why it is not a video."""
    container, duration, streams = _scan_probe_output(stderr)
    videos = [s for s in streams if s.kind == "Video" and not s.is_cover_art]
    audios = [s for s in streams if s.kind == "Audio"]
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
        container=container,
    )


def _scan_probe_output(stderr: str) -> tuple[str, float | None, list[_Stream]]:
    """Return input #0's container format, duration (None if unknown) and streams."""
    input_match = _INPUT_RE.search(stderr)
    if input_match is None:
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
    max_duration_s: float,
    max_pixels: int,
    on_progress: Callable[[float], None] | None = None,
    timeout_s: float = 780.0,
) -> EncodeResult:
    """Encode a source into ``rendition.mp4`` and ``thumbnail.jpg`` in ``out_dir``.

    One ffmpeg process decodes the source once, auto-rotates it, scales it to
    :func:`rendition_size`, overlays the watermark in the bottom-right corner
    (sized from the frame's shorter side), and from that same picture writes an
    H.264/AAC MP4 with the index at the front (+faststart) and a JPEG thumbnail
    of the frame at min(1 s, duration / 2).

    The source is opened as :func:`untrusted_input_args` says: decoding stops
    just past ``max_duration_s`` and refuses any frame over ``max_pixels``,
    whatever the header said. The result's ``duration_s`` is what was really
    decoded: a header that understated a video within the limit does not fail it.

    ``on_progress`` receives fractions in 0..1, at most about once a second or
    per 5 %, and 1.0 only once both outputs are validated and in place.

    Raises :class:`MediaRejected` when the input turns out to be damaged, cut
    short, longer than ``max_duration_s`` or with frames over ``max_pixels``,
    and :class:`MediaProcessingError` on a timeout, a killed ffmpeg, a full
    disk or any other failure (see :func:`classify_ffmpeg_run`); in both cases
    nothing is left in ``out_dir``.
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
            max_duration_s=max_duration_s,
            max_pixels=max_pixels,
            rendition_out=rendition_tmp,
            thumbnail_out=thumbnail_tmp,
        )
        reporter = _ProgressReporter(info.duration_s, on_progress)
        run = run_ffmpeg(args, timeout_s=timeout_s, on_stdout_line=reporter.feed)
        verdict = classify_ffmpeg_run(run, max_pixels=max_pixels, out_dir=out_dir)
        if verdict is not None:
            raise verdict
        rendition = _validate_outputs(info, (width, height), rendition_tmp, thumbnail_tmp, run)
        too_long_or_short = judge_decoded_duration(
            rendition.duration_s, header_s=info.duration_s, max_duration_s=max_duration_s
        )
        if too_long_or_short is not None:
            raise too_long_or_short
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
    max_duration_s: float,
    max_pixels: int,
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
            # At most MAX_FRAME_RATE frames a second: the duration cap then bounds
            # the encode's work too (a 1000 fps file is encoded as 60 fps).
            f"[0:V:0]scale={width}:{height},setsar=1,fps=fps='min(source_fps,{MAX_FRAME_RATE})'[video]",
            f"[1:v]scale=-2:{mark_height}[mark]",
            f"[video][mark]overlay=W-w-{margin}:H-h-{margin},format=yuv420p,split=2[rendition][poster]",
            f"[poster]select='lte(t,{thumbnail_at + 0.001:.3f})+eq(n,0)'[thumbnail]",
        ]
    )
    # Stereo at 48 kHz: the AAC encoder refuses some layouts and rates a file
    # may carry (e.g. 16 channels), and a player needs no more.
    audio = (
        ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000"]
        if info.audio_codec
        else []
    )
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-y",
        "-xerror",  # stop at the first damaged packet or oversized frame instead of going on
        "-benchmark",
        "-progress",
        "pipe:1",
        *untrusted_input_args(
            _file_url(source_path),
            container=info.container,
            max_pixels=max_pixels,
            # Decoding a little past the limit tells "at the limit" from "over it".
            max_duration_s=max_duration_s + DURATION_TOLERANCE_S,
        ),
        # Our own asset, but nothing it could name is opened either.
        "-protocol_whitelist",
        ",".join(LOCAL_PROTOCOLS),
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


# ------------------------------------------------------------------ running ffmpeg


@dataclass(frozen=True)
class FfmpegRun:
    """How one ffmpeg process ended, and what ``-benchmark`` said it cost."""

    returncode: int  # negative: killed by that signal
    stderr: str  # its tail
    timed_out: bool = False  # killed by us at the deadline
    wall_s: float = 0.0
    bench_rtime_s: float | None = None
    maxrss_kb: int | None = None


_BENCH_RTIME_RE = re.compile(r"^bench: utime=\S+ stime=\S+ rtime=(?P<rtime>\d+(?:\.\d+)?)s", re.MULTILINE)
_BENCH_MAXRSS_RE = re.compile(r"^bench: maxrss=(?P<kb>\d+) ?(?:KiB|kB)", re.MULTILINE)


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout_s: float,
    on_stdout_line: Callable[[str], None] | None = None,
) -> FfmpegRun:
    """Run ffmpeg to the end (or the deadline) and say how it ended; never raises for its exit.

    stdout (``-progress pipe:1`` lines, for ``on_stdout_line``) is read line by
    line in this thread; stderr goes to a temporary file so neither pipe can
    fill up and stall ffmpeg. A timer kills the process at the deadline, which
    closes stdout and ends the read loop. If ``on_stdout_line`` raises, ffmpeg
    is killed and the exception propagates.

    ffmpeg gets SIGKILL from the kernel if the calling thread ends first (see
    :func:`_die_with_starting_thread`): call this from the thread that waits
    for the job, not from a short-lived helper thread.
    """
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr_file:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                preexec_fn=_die_with_starting_thread(),  # thread-safe enough: see there
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
                if on_stdout_line is not None:
                    on_stdout_line(raw_line.decode("ascii", errors="replace").strip())
            returncode = proc.wait()
        finally:
            timer.cancel()
            # Reached with the process still running only if on_stdout_line raised.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        wall_s = time.monotonic() - started
        stderr = _read_tail(stderr_file)
    rtime = _BENCH_RTIME_RE.search(stderr)
    maxrss = _BENCH_MAXRSS_RE.search(stderr)
    return FfmpegRun(
        returncode=returncode,
        stderr=stderr,
        timed_out=timed_out.is_set(),
        wall_s=wall_s,
        bench_rtime_s=float(rtime["rtime"]) if rtime else None,
        maxrss_kb=int(maxrss["kb"]) if maxrss else None,
    )


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent (a forked child must not dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


def _die_with_starting_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent dies.

    Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) fires when the
    *thread* that forked the child exits, not only when the whole process does:
    if a worker process is SIGKILLed (OOM, a killed event pump), its ffmpeg
    dies with it instead of running on as an orphan. A job's ffmpeg is started
    and waited for by the same thread, so the signal never fires early. None
    (nothing to do) where prctl does not exist.

    ``preexec_fn`` runs Python between fork and exec, which Python documents
    as unsafe with threads because the child could deadlock on a lock another
    thread held; this one only calls a libc function resolved beforehand and
    takes no Python-level lock.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))
        if os.getppid() != parent:
            # The parent died before the request took effect.
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


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


# ---------------------------------------------------------------- classification

# Demuxers that read other files or addresses their content names, so that a
# refusal can say so. ffmpeg names the one it detected at debug level.
_REFERRING_FORMATS = frozenset({"dash", "hls", "concat", "imf", "sdp", "rtsp", "rtp", "avisynth"})
_PROBED_FORMAT_RE = re.compile(r"Format (?P<name>\S+) probed with size=")

_DISK_FULL = ("No space left on device", "Disk quota exceeded")
_OUT_OF_MEMORY = ("Cannot allocate memory",)
# Below this much free space in the output folder, "disk full" is believed.
_DISK_FULL_BELOW_BYTES = 16 * 1024 * 1024
_ENCODER_REFUSED = ("Error while opening encoder", "Could not open encoder")
_EXTERNAL_TRACK_SKIPPED = ("Skipped opening external track",)
_NOT_ON_WHITELIST = ("Format not on whitelist",)
_PROTOCOL_REFUSED = ("not on whitelist",)  # "Protocol 'http' not on whitelist 'file'!"
_PIXEL_CAP = ("exceeds specified max pixel count",)
_NO_DECODER = ("Decoder not found", "no decoder found", "Decoding requested, but no decoder")
# Signs that the input, not our side, broke the run (exit 183 = AVERROR_INVALIDDATA).
_BAD_INPUT = (
    "Invalid data found when processing input",
    "corrupt input packet",
    "Packet corrupt",
    "moov atom not found",
    "Invalid NAL unit size",
    "error while decoding",
)


def classify_ffmpeg_run(
    run: FfmpegRun, *, max_pixels: int | None = None, out_dir: str | None = None
) -> MediaRejected | MediaProcessingError | None:
    """Say what an ffmpeg run's ending means: the one table of outcomes.

    The first row that applies wins:

    ======================================  ===========  ================================
    outcome                                 class        why
    ======================================  ===========  ================================
    killed by us at the deadline            transient    a busy or slow host; the limits
                                                         bound a good file's work
    killed by a signal                      transient    OOM killer, RLIMIT_FSIZE, ...
    a QuickTime external track skipped      rejected     a reference movie, not a video
    disk full (and out_dir really is full)  transient    ours; even with exit 0
    exit 0                                  none         the outputs are checked next
    no memory                               transient    ours
    format or protocol not on whitelist     rejected     a container we do not accept,
                                                         or one that refers to others
    a frame over max_pixels                 rejected     the pixel cap while decoding
    no decoder for the video                rejected     a format we cannot decode
    an encoder refused the decoded stream   rejected     a layout we cannot convert
    invalid data, corrupt packets           rejected     a damaged or cut-short file
    any other non-zero exit                 transient    unknown: give it another try
    ======================================  ===========  ================================

    The duration cap is judged from what was decoded, not from how ffmpeg
    ended (it stops there cleanly): see :func:`judge_decoded_duration`.

    Only log lines count: lines that start with whitespace are ffmpeg's dump
    of the file's own metadata (titles, tags), which an uploader controls.
    ffmpeg also quotes some of the file's own strings in its input's log lines
    (a codec id, say), so the input's lines cannot make a run look like ours
    to retry: "disk full" is believed only when ``out_dir``'s disk really is
    nearly full, and "no memory" only from lines that are not the input's.
    """
    log = "\n".join(line for line in run.stderr.splitlines() if line[:1] not in (" ", "\t"))
    lowered = log.lower()
    ours = "\n".join(line for line in log.splitlines() if not _from_input(line)).lower()

    def says(patterns: Sequence[str], text: str = lowered) -> bool:
        return any(pattern.lower() in text for pattern in patterns)

    if run.timed_out:
        return MediaProcessingError(f"ffmpeg did not finish in time and was killed after {run.wall_s:.3g} s")
    if run.returncode < 0:
        return MediaProcessingError(f"ffmpeg was killed by {_signal_name(-run.returncode)}")
    if says(_EXTERNAL_TRACK_SKIPPED):
        return MediaRejected(_EXTERNAL_TRACKS)
    if says(_DISK_FULL) and out_dir is not None and _disk_nearly_full(out_dir):
        return MediaProcessingError(f"ffmpeg ran out of disk space: {_last_lines(log)}")
    if run.returncode == 0:
        return None
    if says(_OUT_OF_MEMORY, ours):
        return MediaProcessingError(f"ffmpeg ran out of memory: {_last_lines(log)}")
    if says(_NOT_ON_WHITELIST):
        probed = _PROBED_FORMAT_RE.search(log)
        refers = probed is not None and probed["name"] in _REFERRING_FORMATS
        return MediaRejected(_REFERS_TO_OTHER_FILES if refers else _NOT_AN_ACCEPTED_CONTAINER)
    if says(_PROTOCOL_REFUSED):
        return MediaRejected(_REFERS_TO_OTHER_FILES)
    if says(_PIXEL_CAP):
        return MediaRejected(_pixel_cap_reason(max_pixels))
    if says(_NO_DECODER):
        return MediaRejected("This video uses a format we cannot decode.")
    if says(_ENCODER_REFUSED):
        return MediaRejected("This video's picture or sound is in a form we cannot convert.")
    if says(_BAD_INPUT):
        return MediaRejected(_CUT_SHORT)
    return MediaProcessingError(f"ffmpeg exited with status {run.returncode}: {_last_lines(log)}")


def _pixel_cap_reason(max_pixels: int | None) -> str:
    return f"This video has frames larger than the {_pixels_in_words(max_pixels)} allowed."


# "[in#0 @ 0x...]" and the demuxer's own "[matroska,webm @ 0x...]" lines speak
# for the input: they may quote strings from the file.
_INPUT_LOG_PREFIXES = ("[in#", *(f"[{name}" for name in ("mov,mp4", "matroska,webm")))


def _from_input(line: str) -> bool:
    return line.startswith(_INPUT_LOG_PREFIXES)


def _disk_nearly_full(path: str) -> bool:
    try:
        stats = os.statvfs(path)
    except OSError:
        return True  # the folder itself is gone or unreadable: ours, not the file's
    return stats.f_bavail * stats.f_frsize < _DISK_FULL_BELOW_BYTES


def judge_decoded_duration(
    decoded_s: float, *, header_s: float, max_duration_s: float
) -> MediaRejected | None:
    """Judge how long a video really is, from what was decoded; None if all is well.

    Decoding stops just past the limit (:data:`DURATION_TOLERANCE_S`), so a
    video that got there is over the limit, whatever its header said. One
    shorter than its header by more than the tolerance was cut short or is
    damaged. One longer than its header but within the limit is fine: its
    true duration is ``decoded_s``.
    """
    if decoded_s > max_duration_s + DURATION_TOLERANCE_S / 2:
        return MediaRejected(f"This video is longer than the {_duration_in_words(max_duration_s)} allowed.")
    if decoded_s < header_s - DURATION_TOLERANCE_S:
        # ffmpeg may exit 0 having encoded only the readable part of a damaged file.
        return MediaRejected(_CUT_SHORT)
    return None


def _validate_outputs(
    info: MediaInfo,
    size: tuple[int, int],
    rendition_path: str,
    thumbnail_path: str,
    run: FfmpegRun,
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
    return rendition


# ------------------------------------------------------------------------ helpers


def _duration_in_words(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} second" if seconds == 1 else f"{seconds:g} seconds"
    minutes = round(seconds / 60, 1)
    return f"{minutes:g} minute" if minutes == 1 else f"{minutes:g} minutes"


def _pixels_in_words(max_pixels: int | None) -> str:
    if max_pixels is None:
        return "largest size"
    side = math.isqrt(max_pixels)
    return f"{side}×{side} pixels" if side * side == max_pixels else f"{max_pixels:,} pixels"


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
