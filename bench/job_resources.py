"""Benchmark 4: peak /tmp use and peak memory of one worker job (default: a 60 s 1080p clip).

Runs the worker's job (`UploadProcessor.process` with the real transcoder, on
a moto server in its own process, as bench/ladder_job.py does) RUNS times and
samples, every 20 ms:

- the bytes under the worker's scratch directory (`VIDLINE_WORK_DIR`, i.e.
  Lambda's /tmp): the job directory with ffmpeg's outputs not yet stored;
- the resident memory (VmRSS) of the worker's Python process plus its ffmpeg
  child, i.e. what the Lambda's memory setting must hold.

Also prints ffmpeg's own peak RSS (`-benchmark` maxrss) and the size of the
source and of everything stored, to compare with a job that copied the source
to /tmp first (at least the source's size). Medians of the runs' peaks.

    .venv/bin/python bench/job_resources.py [--runs 3] [--seconds 60] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.worker_on_moto import WorkerJob, moto_worker
from tests.media_tools import make_clip

MB = 1e6


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # stored and deleted meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def rss_bytes(pid: int, leave_out: int) -> int:
    """VmRSS of `pid` and all its descendants but `leave_out` (the moto server)."""
    if pid == leave_out:
        return 0
    total = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                total += sum(rss_bytes(int(child), leave_out) for child in children.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass  # it ended meanwhile
    return total


class Sampler:
    def __init__(self, work_dir: Path, leave_out: int):
        self.work_dir, self.leave_out = work_dir, leave_out
        self.peak_tmp = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_tmp = max(self.peak_tmp, tree_bytes(self.work_dir))
            self.peak_rss = max(self.peak_rss, rss_bytes(os.getpid(), self.leave_out))


def stored_bytes(worker: WorkerJob, prefix: str) -> int:
    s3 = worker.container._s3  # the benchmark stands where S3 would
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=worker.settings.media_bucket, Prefix=prefix)
    return sum(item["Size"] for page in pages for item in page.get("Contents", []))


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidline-bench-"))
    try:
        clip = make_clip(work / "clip.mp4", seconds=args.seconds, size=args.size)
        source_mb = clip.stat().st_size / MB
        print(f"clip: {args.seconds:g} s {args.size} 30 fps, {source_mb:.1f} MB")
        scratch = work / "tmp"
        scratch.mkdir()
        rows = []
        with moto_worker(scratch) as worker:
            for run in range(1, args.runs + 1):
                with Sampler(scratch, worker.moto_pid) as sampler:
                    job = worker.run(clip)
                outputs = job.video.outputs
                assert outputs is not None and outputs.hls_master_key is not None
                stored = stored_bytes(worker, outputs.hls_master_key.removesuffix("hls/master.m3u8"))
                ffmpeg_rss = (job.ffmpeg_rss_kb or 0) * 1024
                rows.append((sampler.peak_tmp, sampler.peak_rss, ffmpeg_rss, stored, job.seconds))
                print(
                    f"run {run}: peak /tmp {sampler.peak_tmp / MB:.1f} MB, peak RSS (worker + ffmpeg) "
                    f"{sampler.peak_rss / MB:.0f} MB, ffmpeg maxrss {ffmpeg_rss / MB:.0f} MB, "
                    f"stored {stored / MB:.1f} MB, job {job.seconds:.1f} s"
                )
        medians = (statistics.median(column) for column in zip(*rows, strict=True))
        tmp, rss, ffmpeg_rss, stored, seconds = medians
        print(
            f"median of {args.runs}: peak /tmp {tmp / MB:.1f} MB "
            f"({tmp / (stored or 1):.2f}× the {stored / MB:.1f} MB stored; a copy of the source alone "
            f"would be {source_mb:.1f} MB), peak RSS worker + ffmpeg {rss / MB:.0f} MB "
            f"(ffmpeg {ffmpeg_rss / MB:.0f} MB), job {seconds:.1f} s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
