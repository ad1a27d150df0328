"""The ladder plan and the ffmpeg command that makes it: pure functions, no I/O.

:func:`plan_ladder` decides which rungs a source gets (only rungs at or below
its shorter side, never upscaled; aspect and orientation kept), their sizes and
bitrate caps, the MP4's rung and the keyframe cadence. :func:`filter_graph`
and :func:`ffmpeg_args` turn a plan into ONE ffmpeg command: one decode, the
watermark burnt in once (see :mod:`chalicelib.media.watermark`), then ``split``
to every rung, the MP4 and the thumbnail. :func:`master_playlist` writes the master
playlist from the plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.domain import Rung
from chalicelib.media.watermark import watermark_filters
from chalicelib.ports import MediaInfo

# Peak video bitrate (maxrate, bits/s) of a rung by its shorter side; rungs in
# between are interpolated linearly, smaller ones scale with their area. In
# line with the ladders Apple's HLS authoring guide and the big platforms use
# for H.264 at 24-30 fps.
VIDEO_MAXRATE_BPS: dict[int, int] = {
    2160: 14_000_000,
    1440: 8_000_000,
    1080: 5_000_000,
    720: 3_000_000,
    480: 1_400_000,
    360: 800_000,
    240: 450_000,
    144: 250_000,
}
# The VBV buffer, in seconds at maxrate: capped CRF may spend up to this much
# above the cap in a burst, and no more.
BUFSIZE_S = 2.0
CRF = 23  # x264's quality target; the caps above bind only on hard pictures
PRESET = "veryfast"  # the measured sweet spot: ultrafast 4.8x the bytes, medium 1.6x slower
AUDIO_BITRATE_BPS = 128_000
AUDIO_NAME = "audio"  # the shared audio rendition's folder: hls/audio/
# Assumed when the probe found no frame rate: only -g depends on it, and the
# forced keyframes keep segments aligned whatever it is.
FALLBACK_FRAME_RATE = 30.0
# The most frames a second a rendition gets.
MAX_FRAME_RATE = 60

# The thumbnail is the frame at min(1 s, duration / 2): 1 s skips fade-ins, and
# half the duration keeps very short clips (0.2 s) inside their frames.
THUMBNAIL_AT_S = 1.0

# File names inside the HLS folder (ffmpeg names init files init_<N>.mp4).
MASTER_NAME = "master.m3u8"
PLAYLIST_NAME = "index.m3u8"
SEGMENT_PATTERN = "seg%05d.m4s"


@dataclass(frozen=True)
class RungPlan:
    """One rung: its name (short side + "p"), size, video cap and master BANDWIDTH."""

    name: str
    width: int
    height: int
    maxrate_bps: int
    bandwidth: int  # the peak: maxrate plus the audio rendition's bitrate

    def as_rung(self) -> Rung:
        """The rung as the domain (and the API) shows it."""
        return Rung(name=self.name, width=self.width, height=self.height, bandwidth=self.bandwidth)


@dataclass(frozen=True)
class LadderPlan:
    """Everything one transcode makes, decided before ffmpeg starts."""

    rungs: tuple[RungPlan, ...]  # largest first
    mp4_index: int  # which rung the MP4 is encoded at
    has_audio: bool
    segment_s: float
    gop_frames: int  # -g: one segment's worth of frames
    thumbnail_at_s: float

    @property
    def mp4(self) -> RungPlan:
        """The MP4's rung."""
        return self.rungs[self.mp4_index]

    @property
    def variants(self) -> tuple[str, ...]:
        """The folders of hls/ with a playlist each: every rung, then the audio."""
        return tuple(r.name for r in self.rungs) + ((AUDIO_NAME,) if self.has_audio else ())


def rung_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The (width, height) of a ``width``×``height`` picture scaled to ``short_side``.

    Keeps the aspect ratio and the orientation and never upscales: the shorter
    side becomes ``min(short_side, the picture's shorter side)``. Both numbers
    are even, as H.264 in 4:2:0 requires.
    """
    landscape = width >= height
    long_in, short_in = (width, height) if landscape else (height, width)
    short_out = _even_at_most(min(short_side, short_in))
    long_out = min(_even_at_most(long_in), max(2, 2 * round(long_in * short_out / short_in / 2)))
    return (long_out, short_out) if landscape else (short_out, long_out)


def video_maxrate_bps(short_side: int) -> int:
    """The video cap of a rung with that shorter side (see :data:`VIDEO_MAXRATE_BPS`)."""
    sides = sorted(VIDEO_MAXRATE_BPS)
    if short_side in VIDEO_MAXRATE_BPS:
        return VIDEO_MAXRATE_BPS[short_side]
    if short_side < sides[0]:
        return max(50_000, round(VIDEO_MAXRATE_BPS[sides[0]] * (short_side / sides[0]) ** 2 / 1000) * 1000)
    if short_side > sides[-1]:
        return VIDEO_MAXRATE_BPS[sides[-1]]
    above = min(s for s in sides if s > short_side)
    below = max(s for s in sides if s < short_side)
    share = (short_side - below) / (above - below)
    low, high = VIDEO_MAXRATE_BPS[below], VIDEO_MAXRATE_BPS[above]
    return round((low + share * (high - low)) / 1000) * 1000


def plan_ladder(
    info: MediaInfo, ladder: Sequence[int], *, mp4_short_side: int, segment_s: float
) -> LadderPlan:
    """Decide the rungs, the MP4's rung and the keyframe cadence for a source.

    Rungs are the ladder's short sides at or below the source's shorter side
    (as displayed: after rotation), largest first. A source smaller than the
    smallest rung gets one rung at its own size (even). The MP4 is the largest
    rung at or below ``mp4_short_side``, else the smallest rung.
    """
    short_in = min(info.width, info.height)
    sides = sorted({side for side in ladder if side <= short_in}, reverse=True)
    if not sides:
        sides = [_even_at_most(short_in)]
    audio = AUDIO_BITRATE_BPS if info.audio_codec else 0
    rungs = []
    for side in sides:
        width, height = rung_size(info.width, info.height, side)
        maxrate = video_maxrate_bps(min(width, height))
        rungs.append(RungPlan(f"{min(width, height)}p", width, height, maxrate, maxrate + audio))
    at_or_below = [i for i, r in enumerate(rungs) if min(r.width, r.height) <= mp4_short_side]
    frame_rate = min(info.frame_rate, MAX_FRAME_RATE) if info.frame_rate > 0 else FALLBACK_FRAME_RATE
    return LadderPlan(
        rungs=tuple(rungs),
        mp4_index=at_or_below[0] if at_or_below else len(rungs) - 1,
        has_audio=info.audio_codec is not None,
        segment_s=segment_s,
        gop_frames=max(1, round(frame_rate * segment_s)),
        thumbnail_at_s=min(THUMBNAIL_AT_S, info.duration_s / 2),
    )


def filter_graph(plan: LadderPlan) -> str:
    """The ``-filter_complex`` graph: decode once, watermark once, split to every output.

    Input 0 is the source (ffmpeg has auto-rotated it), input 1 the watermark
    PNG. The source is scaled to the top rung and watermarked there; every
    other rung is scaled down from that picture. Outputs: ``[v0]``.. one per
    rung, ``[mp4]`` and ``[thumbnail]`` (split off the MP4's rung).
    """
    top = plan.rungs[0]
    # At most MAX_FRAME_RATE frames a second: with the duration cap this bounds
    # what any file costs to encode (a 1000 fps file is encoded as 60 fps).
    parts = [
        f"[0:V:0]scale={top.width}:{top.height},setsar=1,fps=fps='min(source_fps,{MAX_FRAME_RATE})'[frame]"
    ]
    parts += watermark_filters("frame", "1:v", "marked", (top.width, top.height))
    count = len(plan.rungs)
    branches = "".join(f"[r{i}]" for i in range(count))
    parts.append(
        f"[marked]format=yuv420p,split={count}{branches}" if count > 1 else "[marked]format=yuv420p[r0]"
    )
    for i, rung in enumerate(plan.rungs):
        # setsar=1: a scaled picture keeps square pixels (854x480 is not exactly 16:9).
        chain = f"[r{i}]" + ("null" if i == 0 else f"scale={rung.width}:{rung.height},setsar=1")
        chain += f",split=3[v{i}][mp4][poster]" if i == plan.mp4_index else f"[v{i}]"
        parts.append(chain)
    # The thumbnail branch passes every frame up to the chosen instant (and the
    # first frame, in case the picture starts later) to the image muxer, whose
    # -update 1 rewrites one file per frame: the file ends as the frame at that
    # instant, or the best frame there is when the video stream is shorter than
    # or starts after it. An output-side "-ss T -frames:v 1" instead fails the
    # whole run (exit 234, "Could not open encoder before EOF") when no frame
    # reaches T, e.g. 0.3 s of picture in 5 s of sound; so does trim when the
    # first frame comes after T. The extra JPEGs cost nothing measurable.
    parts.append(f"[poster]select='lte(t,{plan.thumbnail_at_s + 0.001:.3f})+eq(n,0)'[thumbnail]")
    return ";".join(parts)


def keyframe_args(plan: LadderPlan) -> list[str]:
    """x264 options for closed GOPs that start at the same instants in every rung.

    A keyframe is forced at every multiple of the segment length, no scene cut
    adds one, and -g/-keyint_min make x264's own cadence the same one. Every
    rung gets the same frames from one split, so their keyframes coincide.
    """
    gop = str(plan.gop_frames)
    return [
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-flags", "+cgop",
        "-force_key_frames", _forced_keyframes(plan.segment_s),
    ]  # fmt: skip


def _forced_keyframes(segment_s: float) -> str:
    # Every segment_s, plus one at segment_s / 2 in the first segment: that
    # first segment is cut there (-hls_init_time), so a stream is playable
    # after half a segment of encoding rather than a whole one.
    half = segment_s / 2
    return f"expr:if(lt(t,{segment_s:g}),gte(t,n_forced*{half:g}),gte(t,{segment_s:g}*(n_forced-1)))"


def var_stream_map(plan: LadderPlan) -> str:
    """ffmpeg's -var_stream_map: a variant per rung named after it, one shared audio group."""
    group = ",agroup:aud" if plan.has_audio else ""
    variants = [f"v:{i}{group},name:{rung.name}" for i, rung in enumerate(plan.rungs)]
    if plan.has_audio:
        variants.append(f"a:0{group},name:{AUDIO_NAME},default:yes")
    return " ".join(variants)


def ffmpeg_args(
    plan: LadderPlan,
    *,
    ffmpeg_path: str,
    source_args: Sequence[str],
    watermark_url: str,
    hls_dir: str,
    mp4_url: str,
    thumbnail_url: str,
) -> list[str]:
    """The whole command: inputs, graph, then the HLS, MP4 and thumbnail outputs.

    ``source_args`` opens the source (ending with ``-i``); ``hls_dir`` is a
    plain path (ffmpeg's HLS muxer expands ``%v`` and ``%05d`` in it, so it
    must not contain "%").
    """
    if "%" in hls_dir:
        raise ValueError(f"the HLS folder's path must not contain '%': {hls_dir!r}")
    audio = ["-map", "0:a:0"] if plan.has_audio else []
    # Stereo at 48 kHz: the AAC encoder refuses some layouts and rates a file
    # may carry (e.g. 16 channels), and a player needs no more.
    audio_codec = ["-c:a", "aac", "-b:a", str(AUDIO_BITRATE_BPS), "-ac", "2", "-ar", "48000"]
    if not plan.has_audio:
        audio_codec = []
    caps: list[str] = []
    for i, rung in enumerate(plan.rungs):
        caps += [f"-maxrate:v:{i}", str(rung.maxrate_bps), f"-bufsize:v:{i}", str(_bufsize(rung))]
    # The outputs are public: drop phone metadata such as GPS location.
    no_metadata = ["-map_metadata", "-1", "-map_chapters", "-1"]
    video_codec = ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF)]
    return [
        ffmpeg_path,
        "-hide_banner", "-nostdin", "-nostats", "-y",
        "-xerror",  # stop at the first damaged packet or oversized frame instead of going on
        "-benchmark", "-progress", "pipe:1",
        *source_args,
        # Our own asset, but nothing it could name is opened either.
        "-protocol_whitelist", "file", "-i", watermark_url,
        "-filter_complex", filter_graph(plan),
        # HLS: every rung and the shared audio, CMAF segments, EVENT playlists
        # replaced atomically (temp_file) while they grow.
        *[arg for i in range(len(plan.rungs)) for arg in ("-map", f"[v{i}]")], *audio,
        *video_codec, *caps, *keyframe_args(plan), *audio_codec, *no_metadata,
        "-f", "hls",
        "-hls_time", f"{plan.segment_s:g}",
        "-hls_init_time", f"{plan.segment_s / 2:g}",
        "-hls_playlist_type", "event",
        "-hls_segment_type", "fmp4",
        "-hls_flags", "independent_segments+temp_file",
        "-var_stream_map", var_stream_map(plan),
        "-hls_segment_filename", f"{hls_dir}/%v/{SEGMENT_PATTERN}",
        f"{hls_dir}/%v/{PLAYLIST_NAME}",
        # MP4 at its rung, index first (+faststart) so it plays while downloading.
        "-map", "[mp4]", *audio,
        *video_codec, "-maxrate:v:0", str(plan.mp4.maxrate_bps), "-bufsize:v:0", str(_bufsize(plan.mp4)),
        *audio_codec, *no_metadata,
        "-movflags", "+faststart", "-f", "mp4", mp4_url,
        # Thumbnail.
        "-map", "[thumbnail]", "-c:v", "mjpeg", "-q:v", "3", "-update", "1", "-f", "image2", thumbnail_url,
    ]  # fmt: skip


AAC_LC_CODEC = "mp4a.40.2"  # ffmpeg's aac encoder writes AAC-LC


def avc_codec(init_segment: bytes) -> str | None:
    """The RFC 6381 codec string (``avc1.PPCCLL``) of the H.264 stream an init segment
    describes, from its ``avcC`` box's profile, compatibility and level bytes; None if absent."""
    at = init_segment.find(b"avcC")
    if at < 0 or len(init_segment) < at + 8:
        return None
    profile, compatibility, level = init_segment[at + 5 : at + 8]
    return f"avc1.{profile:02x}{compatibility:02x}{level:02x}"


def master_playlist(plan: LadderPlan, video_codecs: Mapping[str, str]) -> str:
    """The master playlist: one variant per rung with its peak BANDWIDTH, RESOLUTION and
    CODECS (``video_codecs`` maps rung names to their ``avc1.`` string), and the shared
    audio rendition as the AUDIO group every variant names (none for a silent source).

    Written by us, not ffmpeg: ffmpeg measures BANDWIDTH over the segments written
    before it writes the master (the first ones only) and leaves out a variant
    it has no measure for yet; a player needs the peak, which the caps bound.
    """
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if plan.has_audio:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_NAME}",NAME="{AUDIO_NAME}",'
            f'DEFAULT=YES,AUTOSELECT=YES,URI="{AUDIO_NAME}/{PLAYLIST_NAME}"'
        )
    for rung in plan.rungs:
        codecs = video_codecs[rung.name] + (f",{AAC_LC_CODEC}" if plan.has_audio else "")
        audio = f',AUDIO="{AUDIO_NAME}"' if plan.has_audio else ""
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={rung.bandwidth},RESOLUTION={rung.width}x{rung.height},"
            f'CODECS="{codecs}"{audio}'
        )
        lines.append(f"{rung.name}/{PLAYLIST_NAME}")
    return "\n".join(lines) + "\n"


def _bufsize(rung: RungPlan) -> int:
    return math.ceil(rung.maxrate_bps * BUFSIZE_S)


def _even_at_most(value: float) -> int:
    return max(2, int(value) // 2 * 2)
