"""Benchmark: what one run of each scheduled job costs, on moto.

Starts moto in its own process (bench/worker_on_moto.py) with every resource,
stores BACKGROUND finished videos (which no job should touch or pay for),
then for each job and each number of candidate videos (0 and 100 by default)
stores that many fresh candidates and times one run of the job's service
function (what its @app.schedule handler calls), counting the AWS requests it
makes by service and operation. Each case runs RUNS times (default 3) on new
candidates; the median wall time is printed, with the request counts of the
median run.

Cases:
* abandoned-uploads: videos awaiting an upload whose window passed
  (each: fail, delete its prefix, abort its multipart uploads, email);
* stuck-jobs (requeue): processing videos idle past the timeout, never
  requeued (each: record the requeue, send the S3-shaped message);
* stuck-jobs (fail): the same, requeued once already (each: fail, email).

    .venv/bin/python bench/jobs.py [--candidates 0 100] [--runs 3] [--background 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from botocore.endpoint import Endpoint  # noqa: E402
from worker_on_moto import moto_worker  # noqa: E402

from chalicelib import telemetry  # noqa: E402
from chalicelib.bootstrap import Container  # noqa: E402
from chalicelib.domain import SourceInfo, Video, VideoStatus, new_video_id, utcnow  # noqa: E402
from chalicelib.housekeeping import JobReport  # noqa: E402

IDLE = timedelta(hours=2)  # older than any upload window or stuck timeout


@contextmanager
def counting_requests() -> Iterator[Counter[str]]:
    """Every AWS request any botocore client (boto3's, pynamodb's) makes meanwhile,
    counted as "service:Operation"."""
    counts: Counter[str] = Counter()
    make_request = Endpoint.make_request

    def counted(self: Endpoint, operation_model: Any, request_dict: Any) -> Any:
        counts[f"{operation_model.service_model.service_name}:{operation_model.name}"] += 1
        return make_request(self, operation_model, request_dict)

    Endpoint.make_request = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Endpoint.make_request = make_request  # type: ignore[method-assign]


def store_videos(container: Container, count: int, status: VideoStatus, **changes: Any) -> None:
    """`count` videos of new owners, created and last updated IDLE ago."""
    at = utcnow() - IDLE
    for _ in range(count):
        video = Video(
            id=new_video_id(int(at.timestamp() * 1000)),
            owner_id=str(uuid.uuid4()),
            owner_email="bench@vidline.test",
            title="bench",
            status=status,
            progress=0,
            created_at=at,
            updated_at=at,
            source=SourceInfo(filename="bench.mp4", size_bytes=1_000_000, content_type="video/mp4"),
            **changes,
        )
        container.videos.add(video)


CASES: dict[str, tuple[Callable[[Container, int], None], Callable[[Container], JobReport]]] = {
    "abandoned-uploads": (
        lambda c, n: store_videos(c, n, VideoStatus.AWAITING_UPLOAD),
        lambda c: c.housekeeping.abandon_expired_uploads(),
    ),
    "stuck-jobs (requeue)": (
        lambda c, n: store_videos(c, n, VideoStatus.PROCESSING, upload_etag="e" * 32),
        lambda c: c.housekeeping.rescue_stuck_jobs(),
    ),
    "stuck-jobs (fail)": (
        lambda c, n: store_videos(
            c, n, VideoStatus.PROCESSING, upload_etag="e" * 32, requeued_at=utcnow() - IDLE
        ),
        lambda c: c.housekeeping.rescue_stuck_jobs(),
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, nargs="+", default=[0, 100])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--background", type=int, default=200, help="finished videos in the table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work, moto_worker(Path(work)) as worker:
        container = worker.container
        # Metrics as log lines and only errors logged: the output is the table.
        quiet = container.settings.model_copy(update={"metrics_output": "log", "log_level": "ERROR"})
        telemetry.configure(quiet, "vidline-bench")
        logging.disable(logging.WARNING)
        store_videos(container, args.background, VideoStatus.READY)
        for _, job in CASES.values():  # builds the clients and the services once, unmeasured
            job(container)
        print(f"{args.background} finished videos in the table; median of {args.runs} runs each")
        for name, (arrange, job) in CASES.items():
            for candidates in args.candidates:
                runs = []
                for _ in range(args.runs):
                    arrange(container, candidates)
                    # (Metrics the run flushes as EMF lines go nowhere.)
                    with counting_requests() as counts, contextlib.redirect_stdout(io.StringIO()):
                        started = time.perf_counter()
                        report = job(container)
                        seconds = time.perf_counter() - started
                    assert report.errors == 0 and report.changed == candidates, report
                    runs.append((seconds, dict(counts)))
                seconds, counts = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
                wall = statistics.median(run[0] for run in runs)
                requests = ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none"
                total = sum(counts.values())
                cost = f"{wall * 1000:8.1f} ms {total:5} requests"
                print(f"{name:22} {candidates:4} candidates: {cost} ({requests})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
