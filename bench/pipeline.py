"""Upload → first playable → ready → email on the real local stack, for 1080p30 clips.

Starts `python -m devstack` on free ports and, for each clip length (default
10 s and 60 s), uploads the clip RUNS times through the API's presigned POST
and polls the API every 50 ms. Reports the median time from the upload
landing to the video first being `playable` (master playlist plus the first
segment of every rung stored: the API shows `playable: true` while still
`processing`), to `ready`, and to its email being in the mailbox, plus
ffmpeg's own time for the job (from the worker's log) so the pipeline's
overhead shows as a ratio. Targets: first playable ≤ 3 s; for the 60 s clip,
first playable ≤ 15 % of ready.

    .venv/bin/python bench/pipeline.py [--runs 3] [--seconds 10 60] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from devstack.client import ApiClient, StackProcess
from tests.conftest import make_clip

FFMPEG_LINE = re.compile(r"video (\w+) encoded: ffmpeg ([\d.]+)s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidline-bench-"))
    summaries = []
    with StackProcess(work / "stack.log") as stack:
        user = ApiClient.sign_up(stack.api)
        for seconds in args.seconds:
            clip = make_clip(work / f"clip-{seconds:g}.mp4", seconds=seconds, size=args.size)
            print(f"clip: {seconds:g} s {args.size} 30 fps, {clip.stat().st_size / 1e6:.1f} MB")
            rows = [run_once(stack, user, clip, run) for run in range(1, args.runs + 1)]
            upload, playable, ready, email, ffmpeg_s = (
                statistics.median(column) for column in zip(*rows, strict=True)
            )
            share = statistics.median(p / r for _, p, r, _, _ in rows)
            overhead = statistics.median(r / f for _, _, r, _, f in rows)
            summaries.append(
                f"{seconds:g} s clip, median of {args.runs}: upload {upload:.2f} s, "
                f"landed→first playable {playable:.2f} s, landed→ready {ready:.2f} s, "
                f"landed→email {email:.2f} s, ffmpeg {ffmpeg_s:.2f} s; "
                f"playable ÷ ready {share:.1%}, (landed→ready) ÷ ffmpeg {overhead:.2f}×"
            )
            print(summaries[-1])
    print("\n".join(summaries))
    return 0


def poll(user: ApiClient, video_id: str) -> dict[str, Any]:
    """The video; across a restart of `chalice local` (it reloads when code changes)."""
    for _ in range(100):
        try:
            return user.video(video_id)
        except requests.ConnectionError:
            time.sleep(0.2)
    return user.video(video_id)


def run_once(stack: StackProcess, user: ApiClient, clip: Path, run: int) -> tuple[float, ...]:
    """One upload: seconds to upload, and from landing to first playable, ready, email; ffmpeg's."""
    started = time.monotonic()
    video_id = user.create_and_upload(clip, title=f"bench {run}")
    landed = time.monotonic()
    playable_at = None
    deadline = landed + 600
    while (video := poll(user, video_id))["status"] not in {"ready", "failed"}:
        if playable_at is None and video["playable"]:
            playable_at = time.monotonic()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    ready = time.monotonic()
    assert video["status"] == "ready", video["error"]
    if playable_at is None:  # playable only as it became ready (between two polls)
        playable_at = ready
    while not any(video_id in m["text"] for m in stack.messages_to(user.email)):
        time.sleep(0.05)
    emailed = time.monotonic()
    ffmpeg = {m[1]: float(m[2]) for m in FFMPEG_LINE.finditer(stack.log_path.read_text())}
    row = (landed - started, playable_at - landed, ready - landed, emailed - landed, ffmpeg[video_id])
    print(
        f"  run {run}: upload {row[0]:.2f} s, landed→playable {row[1]:.2f} s, landed→ready {row[2]:.2f} s, "
        f"landed→email {row[3]:.2f} s, ffmpeg {row[4]:.2f} s"
    )
    return row


if __name__ == "__main__":
    raise SystemExit(main())
