"""Benchmark 1: the worker's ladder job vs the bare ffmpeg command making the same outputs.

The job is `UploadProcessor.process` on a moto server (in its own process)
with the real transcoder: claim, probe over HTTP, one ffmpeg reading the
source from a presigned GET, the HLS publisher storing segments while it
encodes, then the MP4, thumbnail, READY and the email. The baseline is the
same ffmpeg command (the same ladder plan, filter graph, HLS, MP4 and
thumbnail outputs) reading the same clip from a local file, with nothing
else. Runs alternate; prints each run, the medians and job ÷ bare
(target ≤ 1.10), in wall time and in CPU time (the worker's process and
its children, plus what moto spent serving it; CPU holds steadier than wall
time on a shared machine).

    .venv/bin/python bench/ladder_job.py [--runs 3] [--seconds 10] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.worker_on_moto import cpu_seconds, moto_worker
from chalicelib.media import default_watermark_path
from chalicelib.media.ffmpeg import file_url, find_ffmpeg, source_args
from chalicelib.media.ladder import ffmpeg_args, plan_ladder
from chalicelib.ports import MediaSource
from chalicelib.settings import Settings
from tests.media_tools import make_clip, transcoder


def bare_ffmpeg(clip: Path, out: Path, settings: Settings) -> tuple[float, float]:
    """The worker's ffmpeg command on a local copy of the clip; its wall and CPU time."""
    info = transcoder().probe(MediaSource(str(clip)))  # not timed: the bare command needs no probe
    plan = plan_ladder(
        info,
        settings.ladder,
        mp4_short_side=settings.rendition_short_side_px,
        segment_s=settings.hls_segment_s,
    )
    hls = out / "hls"
    for variant in plan.variants:
        (hls / variant).mkdir(parents=True)
    args = ffmpeg_args(
        plan,
        ffmpeg_path=find_ffmpeg(settings.ffmpeg_path),
        source_args=source_args(
            MediaSource(str(clip)),
            container=info.container,
            max_pixels=settings.frame_pixel_limit,
            max_duration_s=settings.max_duration_s,
        ),
        watermark_url=file_url(default_watermark_path()),
        hls_dir=str(hls),
        mp4_url=file_url(str(out / "rendition.mp4")),
        thumbnail_url=file_url(str(out / "thumbnail.jpg")),
    )
    cpu, started = cpu_seconds(), time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidline-bench-"))
    try:
        clip = make_clip(work / "clip.mp4", seconds=args.seconds, size=args.size)
        print(f"clip: {args.seconds:g} s {args.size} 30 fps, {clip.stat().st_size / 1e6:.1f} MB")
        (work / "jobs").mkdir()
        jobs, bares, playables, job_cpus, bare_cpus = [], [], [], [], []
        with moto_worker(work / "jobs") as worker:
            print(f"ladder {worker.settings.ladder}, segments {worker.settings.hls_segment_s:g} s")
            for run in range(1, args.runs + 1):
                out = work / f"bare-{run}"
                bare, bare_cpu = bare_ffmpeg(clip, out, worker.settings)
                shutil.rmtree(out)
                job = worker.run(clip)
                jobs.append(job.seconds)
                bares.append(bare)
                job_cpus.append(job.cpu_s + job.moto_cpu_s)
                bare_cpus.append(bare_cpu)
                if job.playable_after_s is not None:
                    playables.append(job.playable_after_s)
                print(
                    f"run {run}: bare ffmpeg {bare:.2f} s ({bare_cpu:.1f} s CPU), "
                    f"worker job {job.seconds:.2f} s ({job.cpu_s:.1f} s CPU + moto {job.moto_cpu_s:.1f} s; "
                    f"its ffmpeg {job.ffmpeg_seconds} s, playable after {job.playable_after_s} s), "
                    f"ratio {job.seconds / bare:.3f}"
                )
        job_s, bare_s = statistics.median(jobs), statistics.median(bares)
        ratio = statistics.median(j / b for j, b in zip(jobs, bares, strict=True))
        cpu_ratio = statistics.median(j / b for j, b in zip(job_cpus, bare_cpus, strict=True))
        playable = f"{statistics.median(playables):.2f} s" if playables else "-"
        print(
            f"median of {args.runs}: bare ffmpeg {bare_s:.2f} s, worker job {job_s:.2f} s, "
            f"job ÷ bare {job_s / bare_s:.3f} (median of per-run ratios {ratio:.3f}; target ≤ 1.10); "
            f"CPU job (incl. moto) ÷ bare {cpu_ratio:.3f}; playable after {playable} of publishing"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
