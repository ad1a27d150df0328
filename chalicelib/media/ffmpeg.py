"""Running and supervising ffmpeg on untrusted input.

* :func:`untrusted_input_args` opens an upload with allow-lists of demuxers
  (:data:`SOURCE_FORMATS`) and of protocols (from the source's URL scheme:
  :func:`source_input`), never follows a QuickTime file's external tracks,
  caps every decoded frame in pixels and stops reading at the duration limit
  whatever the header says.
* :func:`run_ffmpeg` runs one ffmpeg to the end or a deadline, feeding its
  ``-progress`` lines to a callback; the kernel kills it if the thread that
  started it dies (see :func:`_die_with_starting_thread`).
* :func:`classify_ffmpeg_run` is the one table that sorts ffmpeg's endings into
  "the file is bad" (:class:`MediaRejected`), "try again"
  (:class:`MediaProcessingError`) and "the source was replaced"
  (:class:`ObjectChanged`); :func:`judge_decoded_duration` judges what was
  really decoded.
"""

from __future__ import annotations

import ctypes
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
from typing import IO
from urllib.parse import urlsplit

from chalicelib.ports import MediaProcessingError, MediaRejected, MediaSource, ObjectChanged

# The demuxers an upload may be opened with: the containers behind the content
# types we accept (settings.allowed_content_types). video/mp4 and
# video/quicktime are ffmpeg's "mov,mp4,m4a,3gp,3g2,mj2" demuxer, video/webm
# and video/x-matroska its "matroska,webm". Anything else ffmpeg might detect
# in the content (dash, hls, concat, imf, sdp, image2, ...) is refused.
SOURCE_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")

# What an input may open, by the source's URL scheme: a local path opens local
# files only; a presigned URL opens that protocol's stack and nothing else
# ("data:" URIs, files and every other protocol are refused).
LOCAL_PROTOCOLS = ("file",)
SOURCE_PROTOCOLS = {"http": ("http", "tcp"), "https": ("https", "tls", "tcp")}

# A rendition must last as long as its source, give or take this much. Decoding
# stops at the duration limit plus this much, and a rendition longer than the
# limit plus half of it reached the cap: the video is over the limit.
DURATION_TOLERANCE_S = 0.5

# Progress callbacks fire when progress moved by this much or this long has passed.
PROGRESS_MIN_STEP = 0.05
PROGRESS_MIN_INTERVAL_S = 1.0

# Only the tail of ffmpeg's stderr is kept in memory: the lines we parse
# (errors, -benchmark results) come last, and a damaged file can log megabytes.
_STDERR_TAIL_BYTES = 256 * 1024

NOT_A_VIDEO = "This file is not a video we can read (it may be damaged or not a video at all)."
CUT_SHORT = (
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


def find_ffmpeg(configured: str = "") -> str:
    """The ffmpeg binary: ``configured`` if given, else the imageio-ffmpeg wheel's.

    The composition root passes the ``ffmpeg_path`` setting
    (``VIDLINE_FFMPEG_PATH``): on Lambda the layer's ``/opt/bin/ffmpeg``, and the
    worker's zip has no ``imageio_ffmpeg``. Unset, it is the binary of the
    ``imageio-ffmpeg`` wheel (local runs, tests), imported only then.
    """
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"VIDLINE_FFMPEG_PATH={configured!r} is not an executable file")
        return configured
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


# ------------------------------------------------------------------ untrusted input


def source_input(source: MediaSource) -> tuple[str, tuple[str, ...]]:
    """The URL ffmpeg opens for ``source`` and the protocols it may use.

    A path becomes a ``file:`` URL (so a ":" in it is not read as a protocol)
    opened with ``file`` alone; ``http://`` (the local stand-in) with
    ``http,tcp``; ``https://`` with ``https,tls,tcp``. Any other scheme is a
    programming error.
    """
    scheme = urlsplit(source.location).scheme if "://" in source.location else ""
    if not scheme:
        return file_url(source.location), LOCAL_PROTOCOLS
    if scheme not in SOURCE_PROTOCOLS:
        raise ValueError(f"ffmpeg reads sources from paths, http:// or https://, not {scheme}://")
    return source.location, SOURCE_PROTOCOLS[scheme]


def source_args(
    source: MediaSource,
    *,
    container: str = "",
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> list[str]:
    """:func:`untrusted_input_args` for a :class:`MediaSource`: URL, protocols and headers from it."""
    url, protocols = source_input(source)
    return untrusted_input_args(
        url,
        protocols=protocols,
        headers=source.headers if protocols != LOCAL_PROTOCOLS else (),
        container=container,
        max_pixels=max_pixels,
        max_duration_s=max_duration_s,
    )


def untrusted_input_args(
    url: str,
    *,
    protocols: Sequence[str] = LOCAL_PROTOCOLS,
    headers: Sequence[tuple[str, str]] = (),
    container: str = "",
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> list[str]:
    """The ffmpeg arguments that open an uploaded file at ``url`` (ending with ``-i url``).

    * Only the demuxers in :data:`SOURCE_FORMATS` may read it, and only
      ``protocols`` may be opened (by it or anything it names).
    * ``headers`` go with every HTTP request (e.g. the signed If-Match).
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
    if headers:
        # The http protocol's option: CRLF-terminated header lines.
        args += ["-headers", "".join(f"{name}: {value}\r\n" for name, value in headers)]
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


def file_url(path: str) -> str:
    """A local path as ffmpeg's ``file:`` URL ("file:" stops a ":" in the path reading as a protocol)."""
    return "file:" + os.path.abspath(path)


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


class ProgressReporter:
    """Turns ``-progress`` key=value lines into throttled fraction callbacks."""

    # Progress while ffmpeg runs stays below 1.0; 1.0 means "outputs are ready".
    _RUNNING_CAP = 0.99

    def __init__(self, duration_s: float, on_progress: Callable[[float], None] | None) -> None:
        self._duration_us = duration_s * 1_000_000
        self._on_progress = on_progress
        self._last_fraction = -1.0
        self._last_at = 0.0

    def feed(self, line: str) -> None:
        """Take one ``-progress`` line; call back if progress moved enough."""
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

# The source's store answered that the object asked for (with If-Match) is not
# there any more: replaced (412) or removed (404). Retrying cannot bring it back.
_SOURCE_REPLACED_RE = re.compile(r"(?:HTTP error|Server returned) (?P<status>412|404)\b")
# A network read of the source that broke: ours (or the store's) to retry, not
# the file's fault, even when ffmpeg then exits 0 with what it had read.
_NETWORK_BROKE = (
    "Connection reset",
    "Connection refused",
    "Connection timed out",
    "I/O error",
    "Error in the pull function",
    "Stream ends prematurely",
    "Server returned 4",
    "Server returned 5",
)
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
) -> MediaRejected | MediaProcessingError | ObjectChanged | None:
    """Say what an ffmpeg run's ending means: the one table of outcomes.

    The first row that applies wins:

    ======================================  ===========  ================================
    outcome                                 class        why
    ======================================  ===========  ================================
    killed by us at the deadline            transient    a busy or slow host; the limits
                                                         bound a good file's work
    killed by a signal                      transient    OOM killer, RLIMIT_FSIZE, ...
    a QuickTime external track skipped      rejected     a reference movie, not a video
    the source answered 412 or 404          changed      replaced or removed meanwhile
    a network read of the source broke      transient    reset, cut off, 4xx/5xx; even
                                                         with exit 0 (what was read
                                                         would look cut short)
    disk full (and out_dir really is full)  transient    ours; even with exit 0
    exit 0                                  none         the outputs are checked next
    no memory (not in the input's lines)    transient    ours
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
    if (replaced := _SOURCE_REPLACED_RE.search(log)) is not None:
        return ObjectChanged(f"the source answered {replaced['status']}: it was replaced or removed")
    if says(_NETWORK_BROKE):
        return MediaProcessingError(f"reading the source broke off: {last_lines(log)}")
    if says(_DISK_FULL) and out_dir is not None and _disk_nearly_full(out_dir):
        return MediaProcessingError(f"ffmpeg ran out of disk space: {last_lines(log)}")
    if run.returncode == 0:
        return None
    if says(_OUT_OF_MEMORY, ours):
        return MediaProcessingError(f"ffmpeg ran out of memory: {last_lines(log)}")
    if says(_NOT_ON_WHITELIST):
        probed = _PROBED_FORMAT_RE.search(log)
        refers = probed is not None and probed["name"] in _REFERRING_FORMATS
        return MediaRejected(_REFERS_TO_OTHER_FILES if refers else _NOT_AN_ACCEPTED_CONTAINER)
    if says(_PROTOCOL_REFUSED):
        return MediaRejected(_REFERS_TO_OTHER_FILES)
    if says(_PIXEL_CAP):
        return MediaRejected(pixel_cap_reason(max_pixels))
    if says(_NO_DECODER):
        return MediaRejected("This video uses a format we cannot decode.")
    if says(_ENCODER_REFUSED):
        return MediaRejected("This video's picture or sound is in a form we cannot convert.")
    if says(_BAD_INPUT):
        return MediaRejected(CUT_SHORT)
    return MediaProcessingError(f"ffmpeg exited with status {run.returncode}: {last_lines(log)}")


def pixel_cap_reason(max_pixels: int | None) -> str:
    """The reason given for a frame over ``max_pixels``."""
    return f"This video has frames larger than the {_pixels_in_words(max_pixels)} allowed."


def said_pixel_cap(stderr: str) -> bool:
    """Whether ffmpeg refused a frame for the pixel cap."""
    return any(pattern in stderr for pattern in _PIXEL_CAP)


# "[in#0 @ 0x...]" and the demuxer's own "[matroska,webm @ 0x...]" lines speak
# for the input: they may quote strings from the file.
_INPUT_LOG_PREFIXES = ("[in#", "[mov,mp4", "[matroska,webm")


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
        return MediaRejected(CUT_SHORT)
    return None


# ------------------------------------------------------------------------ helpers


def last_lines(stderr: str, count: int = 5) -> str:
    """Summarise ffmpeg's stderr for operators: its last error lines, else last lines."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|failed|invalid", line, re.IGNORECASE)]
    return " | ".join((errors or lines)[-count:])


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


def _read_tail(stream: IO[bytes]) -> str:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - _STDERR_TAIL_BYTES))
    return stream.read().decode("utf-8", errors="replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
