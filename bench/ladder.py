"""Benchmark 2: the one-process ladder vs one ffmpeg process per output, same outputs.

Makes a 1080p30 clip with sound (default 10 s) encoded as a phone records
(H.264 High profile, CABAC, B-frames, about 12 Mb/s: decoding it costs what
decoding an upload costs, unlike ffmpeg's quick test clips), then alternates,
RUNS times:

* ladder -- ``FfmpegTranscoder.transcode``: ONE ffmpeg process, one decode,
  the watermark burnt in once, split to every rung (1080/720/480/360), the
  shared audio rendition, the 720p faststart MP4 and the thumbnail;
* per output -- the same outputs from separate ffmpeg processes run one after
  another: one per rung (each decodes the source and burns the watermark in
  itself), one for the audio rendition, one for the MP4 and one for the
  thumbnail, each with the ladder's own encoder settings (ladder.py).

Prints the median wall time of each and the speed-up (target ≥ 1.25×), the
median CPU time (user + system of the ffmpeg processes) of each and its ratio
-- the figure that holds when other work shares the cores -- and for the
ladder ffmpeg's own ``-benchmark`` rtime and maxrss.

    .venv/bin/python bench/ladder.py [--runs 3] [--seconds 10] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.media import FfmpegTranscoder, default_watermark_path, find_ffmpeg
from chalicelib.media.ffmpeg import file_url
from chalicelib.media.ladder import (
    AUDIO_BITRATE_BPS,
    AUDIO_NAME,
    BUFSIZE_S,
    CRF,
    MASTER_NAME,
    PLAYLIST_NAME,
    PRESET,
    SEGMENT_PATTERN,
    LadderPlan,
    RungPlan,
    avc_codec,
    keyframe_args,
    master_playlist,
    plan_ladder,
)
from chalicelib.media.watermark import watermark_filters
from chalicelib.ports import MediaInfo, MediaSource
from tests.media_tools import ffmpeg

LADDER = (1080, 720, 480, 360)
MP4_SHORT_SIDE = 720
SEGMENT_S = 2.0
MAXRSS_RE = re.compile(r"^bench: maxrss=(\d+)", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidline-bench-ladder-"))
    try:
        ffmpeg = find_ffmpeg()
        transcoder = FfmpegTranscoder(ffmpeg, default_watermark_path())
        clip = phone_like_clip(work / "clip.mp4", seconds=args.seconds, size=args.size)
        source = MediaSource(str(clip))
        info = transcoder.probe(source)
        plan = plan_ladder(info, LADDER, mp4_short_side=MP4_SHORT_SIDE, segment_s=SEGMENT_S)
        print(f"clip: {args.seconds:g} s {args.size} 30 fps with sound; rungs {[r.name for r in plan.rungs]}")
        ladder_s, per_output_s, rtimes, maxrss, per_output_rss = [], [], [], [], []
        ladder_cpu, per_output_cpu = [], []
        for run in range(1, args.runs + 1):
            out = work / f"ladder-{run}"
            out.mkdir()
            cpu = children_cpu_s()
            started = time.monotonic()
            result = transcoder.transcode(
                source, info, str(out), ladder=LADDER, mp4_short_side=MP4_SHORT_SIDE, segment_s=SEGMENT_S,
                max_duration_s=3600, max_pixels=4096 * 4096,
            )  # fmt: skip
            ladder_s.append(time.monotonic() - started)
            ladder_cpu.append(children_cpu_s() - cpu)
            rtimes.append(result.ffmpeg_seconds)
            maxrss.append(result.ffmpeg_maxrss_kb or 0)
            shutil.rmtree(out)

            out = work / f"per-output-{run}"
            cpu = children_cpu_s()
            started = time.monotonic()
            rss = per_output(ffmpeg, str(clip), info, plan, out)
            per_output_s.append(time.monotonic() - started)
            per_output_cpu.append(children_cpu_s() - cpu)
            per_output_rss.append(rss)
            shutil.rmtree(out)
            print(f"run {run}: ladder {ladder_s[-1]:.2f} s (ffmpeg rtime {rtimes[-1]:.2f} s, "
                  f"CPU {ladder_cpu[-1]:.2f} s), per output {per_output_s[-1]:.2f} s "
                  f"(CPU {per_output_cpu[-1]:.2f} s)", flush=True)  # fmt: skip
        ladder, separate = statistics.median(ladder_s), statistics.median(per_output_s)
        rtime, ladder_mib = statistics.median(rtimes), statistics.median(maxrss) / 1024
        print(
            f"median of {args.runs}: one-process ladder {ladder:.2f} s (ffmpeg rtime {rtime:.2f} s, "
            f"maxrss {ladder_mib:.0f} MiB); one process per output {separate:.2f} s (largest maxrss "
            f"{statistics.median(per_output_rss) / 1024:.0f} MiB); "
            f"speed-up {separate / ladder:.2f}× (target ≥ 1.25×)"
        )
        cpu_ladder, cpu_separate = statistics.median(ladder_cpu), statistics.median(per_output_cpu)
        print(
            f"CPU time, median of {args.runs}: ladder {cpu_ladder:.2f} s, per output {cpu_separate:.2f} s, "
            f"ratio {cpu_separate / cpu_ladder:.2f}×"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def per_output(ffmpeg: str, clip: str, info: MediaInfo, plan: LadderPlan, out: Path) -> int:
    """Make the ladder's outputs with one ffmpeg per output, one after another; the largest maxrss (KiB)."""
    hls = out / "hls"
    watermark = ["-i", file_url(default_watermark_path())]
    rss = 0
    for rung in plan.rungs:
        one = dataclasses.replace(plan, rungs=(rung,), mp4_index=0)
        (hls / rung.name).mkdir(parents=True)
        graph = marked_graph(rung.width, rung.height)
        rss = max(rss, run(ffmpeg, "-i", clip, *watermark, "-filter_complex", graph, "-map", "[v]",
                           "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF),
                           "-maxrate", str(rung.maxrate_bps), "-bufsize", str(bufsize(rung)),
                           *keyframe_args(one), *hls_args(hls / rung.name)))  # fmt: skip
    if plan.has_audio:
        (hls / AUDIO_NAME).mkdir()
        rss = max(rss, run(ffmpeg, "-i", clip, "-map", "0:a:0", "-c:a", "aac", "-b:a", str(AUDIO_BITRATE_BPS),
                           *hls_args(hls / AUDIO_NAME)))  # fmt: skip
    codecs = {}
    for rung in plan.rungs:
        init = next((hls / rung.name).glob("init*.mp4"))
        codecs[rung.name] = avc_codec(init.read_bytes()) or "avc1"
    (hls / MASTER_NAME).write_text(master_playlist(plan, codecs))
    mp4 = plan.mp4
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", str(AUDIO_BITRATE_BPS)] if plan.has_audio else []
    rss = max(rss, run(ffmpeg, "-i", clip, *watermark, "-filter_complex", marked_graph(mp4.width, mp4.height),
                       "-map", "[v]", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF),
                       "-maxrate", str(mp4.maxrate_bps), "-bufsize", str(bufsize(mp4)), *audio,
                       "-movflags", "+faststart", str(out / "rendition.mp4")))  # fmt: skip
    rss = max(rss, run(ffmpeg, "-ss", f"{plan.thumbnail_at_s:.3f}", "-i", clip, *watermark,
                       "-filter_complex", marked_graph(mp4.width, mp4.height), "-map", "[v]",
                       "-frames:v", "1", "-q:v", "3", str(out / "thumbnail.jpg")))  # fmt: skip
    return rss


def phone_like_clip(path: Path, *, seconds: float, size: str) -> Path:
    """testsrc2 plus a tone, encoded about as a phone camera does (High profile, ~12 Mb/s)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:v", "libx264", "-preset", "medium", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-b:v", "12M", "-maxrate", "12M", "-bufsize", "24M", "-g", "30",
        "-c:a", "aac", "-b:a", "192k", str(path),
    )  # fmt: skip
    return path


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bufsize(rung: RungPlan) -> int:
    return math.ceil(rung.maxrate_bps * BUFSIZE_S)


def marked_graph(width: int, height: int) -> str:
    return ";".join(
        [
            f"[0:V:0]scale={width}:{height},setsar=1[frame]",
            *watermark_filters("frame", "1:v", "marked", (width, height)),
            "[marked]format=yuv420p[v]",
        ]
    )


def hls_args(folder: Path) -> list[str]:
    return [
        "-f", "hls", "-hls_time", f"{SEGMENT_S:g}", "-hls_playlist_type", "event",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments+temp_file",
        "-hls_segment_filename", f"{folder}/{SEGMENT_PATTERN}", f"{folder}/{PLAYLIST_NAME}",
    ]  # fmt: skip


def run(ffmpeg: str, *args: str) -> int:
    """Run one ffmpeg to the end; its maxrss in KiB."""
    completed = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-y", "-benchmark", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    found = MAXRSS_RE.search(completed.stderr)
    return int(found[1]) if found else 0


if __name__ == "__main__":
    sys.exit(main())
