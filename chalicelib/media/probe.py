"""Probe an upload: what ``ffmpeg -i`` says about it, parsed (imageio-ffmpeg ships no ffprobe)."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from chalicelib.media.ffmpeg import (
    NOT_A_VIDEO,
    classify_ffmpeg_run,
    pixel_cap_reason,
    run_ffmpeg,
    said_pixel_cap,
    source_args,
)
from chalicelib.ports import MediaInfo, MediaRejected, MediaSource

PROBE_TIMEOUT_S = 60.0

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
# ", 29.97 fps," (the header's rate), else ", 30 tbr," (ffmpeg's guess).
_RATE_RE = re.compile(r", (?P<rate>\d+(?:\.\d+)?)(?P<k>k?) (?:fps|tbr)\b")


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


def probe(ffmpeg_path: str, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
    """Describe the media at ``source``, or reject it with a reason for people.

    ``max_pixels`` caps the frames the probe decodes to learn the streams, so
    a huge first frame costs no memory here: it is rejected with the pixel
    cap's reason.

    The source is opened as :func:`~chalicelib.media.ffmpeg.untrusted_input_args`
    says: a playlist or manifest, any other container we do not accept, or a
    QuickTime reference movie is rejected having read nothing but itself
    (ffmpeg follows no QuickTime external track by default, and the probe
    cannot say so explicitly before it knows the demuxer: it rejects the file
    when ffmpeg reports skipping one). Raises :class:`MediaRejected` for those,
    an empty file, something ffmpeg cannot read, a file with no video (audio
    alone, or audio with cover art), or one whose duration is unknown or zero.
    Raises :class:`MediaProcessingError` if ffmpeg misbehaves or a network read
    breaks, :class:`ObjectChanged` if the store answers 412/404 for it, and
    ``FileNotFoundError`` if a local source does not exist.
    """
    is_path = "://" not in source.location
    if is_path and os.path.getsize(source.location) == 0:
        raise MediaRejected("This file is empty.")
    # Debug level adds the line naming the demuxer ffmpeg detected ("Format
    # dash probed with ..."), so a refusal can say what the file was; a probe
    # logs about a hundred lines at this level.
    args = [
        ffmpeg_path,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "debug",
        *source_args(source, max_pixels=max_pixels),
    ]
    run = run_ffmpeg(args, timeout_s=PROBE_TIMEOUT_S)
    if run.returncode > 0 and _INPUT_RE.search(run.stderr) is not None:
        # Without an output ffmpeg exits 1 once the input is open ("At least
        # one output file must be specified"): that status means nothing.
        run = dataclasses.replace(run, returncode=0)
    verdict = classify_ffmpeg_run(run, max_pixels=max_pixels)
    if verdict is not None:
        raise verdict
    if said_pixel_cap(run.stderr):
        # The decoder refused the first frames, so their size is unknown too.
        raise MediaRejected(pixel_cap_reason(max_pixels))
    return parse_probe(run.stderr)


def parse_probe(stderr: str) -> MediaInfo:
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
    rate = _RATE_RE.search(videos[0].rest)
    return MediaInfo(
        duration_s=duration,
        width=width,
        height=height,
        video_codec=videos[0].codec,
        audio_codec=audios[0].codec if audios else None,
        rotation=round(videos[0].rotation) % 360,
        container=container,
        frame_rate=float(rate["rate"]) * (1000 if rate["k"] else 1) if rate else 0.0,
    )


def _scan_probe_output(stderr: str) -> tuple[str, float | None, list[_Stream]]:
    """Return input #0's container format, duration (None if unknown) and streams."""
    input_match = _INPUT_RE.search(stderr)
    if input_match is None:
        raise MediaRejected(NOT_A_VIDEO)
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
