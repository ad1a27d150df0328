"""Upload → ready → email on the real local stack, for a 10 s 1080p30 clip.

Starts `python -m devstack` on free ports, uploads the clip RUNS times
through the API's presigned POST, and reports the median time from the
upload landing to the video being `ready`, and to its email being in the
mailbox, plus ffmpeg's own time for the encode (from the worker's log) so
the pipeline's overhead shows as a ratio.

    .venv/bin/python bench/pipeline.py [--runs 3] [--seconds 10] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.client import ApiClient, StackProcess
from tests.conftest import make_clip

FFMPEG_LINE = re.compile(r"video (\w+) encoded: ffmpeg ([\d.]+)s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidline-bench-"))
    clip = make_clip(work / "clip.mp4", seconds=args.seconds, size=args.size)
    print(f"clip: {args.seconds:g} s {args.size} 30 fps, {clip.stat().st_size / 1e6:.1f} MB")
    rows: list[tuple[float, float, float, float]] = []
    with StackProcess(work / "stack.log") as stack:
        user = ApiClient.sign_up(stack.api)
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            video_id = user.create_and_upload(clip, title=f"bench {run}")
            landed = time.monotonic()
            video, _ = user.wait_until_final(video_id, timeout_s=300, poll_s=0.05)
            ready = time.monotonic()
            assert video["status"] == "ready", video["error"]
            while not any(video_id in m["text"] for m in stack.messages_to(user.email)):
                time.sleep(0.05)
            emailed = time.monotonic()
            ffmpeg = {m[1]: float(m[2]) for m in FFMPEG_LINE.finditer(stack.log_path.read_text())}
            rows.append((landed - started, ready - landed, emailed - landed, ffmpeg[video_id]))
            print(
                f"run {run}: upload {rows[-1][0]:.2f} s, landed→ready {rows[-1][1]:.2f} s, "
                f"landed→email {rows[-1][2]:.2f} s, ffmpeg {rows[-1][3]:.2f} s"
            )
    upload, to_ready, to_email, ffmpeg_s = (statistics.median(column) for column in zip(*rows, strict=True))
    overhead = statistics.median(ready / ffmpeg for _, ready, _, ffmpeg in rows)
    print(
        f"median of {args.runs}: upload {upload:.2f} s, landed→ready {to_ready:.2f} s, "
        f"landed→email {to_email:.2f} s, ffmpeg {ffmpeg_s:.2f} s, "
        f"(landed→ready) ÷ ffmpeg {overhead:.2f}×"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
