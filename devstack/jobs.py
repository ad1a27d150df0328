"""The workers' scheduled jobs, run locally through the handlers Lambda would call.

`chalice local` never runs `@app.schedule` handlers. Locally they run:

- on demand: `python -m devstack job NAME` runs one job now, against the
  running local stack, and prints its report. It reads the environment the
  stack wrote (`.vidline/local-<moto port>.env`; the port is
  `VIDLINE_MOTO_PORT`, 5000 by default, as for the stack), loads
  `workers/app.py` and calls `app.handler_map[NAME]` with a scheduled event
  and a Lambda context, exactly as EventBridge and Lambda would.
- on timers: the stack runs `python -m devstack.jobs --worker-dir workers
  --every S` as a supervised child (restarted when the worker's code
  changes), which runs every job that way every S seconds
  (`VIDLINE_LOCAL_JOB_INTERVAL_S`, 60 by default; 0 starts no timers).
  Their log lines appear in the stack's output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from chalice.app import Chalice, ScheduledEventConfig
from chalice.local import LambdaContext

from devstack.pump import lambda_settings, load_chalice_app, local_environment

logger = logging.getLogger("devstack.jobs")

REPO_ROOT = Path(__file__).resolve().parent.parent
# Written by the stack next to `.vidline/local.env`, one per stand-in port, so
# that stacks running side by side (the tests') keep apart.
PORT_ENV_FILE = Path(".vidline") / "local-{moto_port}.env"
DEFAULT_MOTO_PORT = 5000
# What Lambda's context says when EventBridge invokes a function: any account id does locally.
LOCAL_ACCOUNT = "123456789012"


class JobError(Exception):
    """A job cannot be run; the message says why, for people."""


def scheduled_jobs(app: Chalice) -> list[str]:
    """The names of the app's `@app.schedule` handlers, in the order they are declared."""
    return [source.name for source in app.event_sources if isinstance(source, ScheduledEventConfig)]


def scheduled_event(name: str, region: str, now: datetime | None = None) -> dict[str, Any]:
    """The event EventBridge sends a function on its schedule (a "Scheduled Event")."""
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": at.isoformat().replace("+00:00", "Z"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{LOCAL_ACCOUNT}:rule/{name}"],
        "detail": {},
    }


def run_job(app: Chalice, name: str, *, region: str, memory_mb: int = 128, timeout_s: int = 900) -> Any:
    """Call the scheduled handler `name` as Lambda would; what it returns (its report).
    JobError names the jobs there are if `name` is not one of them."""
    names = scheduled_jobs(app)
    if name not in names:
        raise JobError(f"no scheduled job named {name!r}; the jobs are: {', '.join(names) or 'none'}")
    context = LambdaContext(name, memory_mb, max_runtime_ms=timeout_s * 1000)
    return app.handler_map[name](scheduled_event(name, region), context)


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file the stack wrote (`export K=V` lines, shell-quoted)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


def stack_environment(project_dir: Path, moto_port: int) -> dict[str, str]:
    """The environment of the local stack on `moto_port`; JobError if none is running there."""
    env_file = project_dir / str(PORT_ENV_FILE).format(moto_port=moto_port)
    start = "start it with `python -m devstack` (or set VIDLINE_MOTO_PORT to the port of yours)"
    if not env_file.is_file():
        raise JobError(f"the local stack is not running (no {env_file}): {start}")
    env = read_env_file(env_file)
    endpoint = env.get("AWS_ENDPOINT_URL", "")
    try:
        # moto's own API answers without touching any resource.
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5):
            pass
    except (OSError, ValueError, urllib.error.URLError) as error:
        message = f"the local stack is not running (nothing answers at {endpoint}: {error}); {start}"
        raise JobError(message) from error
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devstack job NAME`: run one scheduled job now; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack job",
        description="Run one of the workers' scheduled jobs now, against the running local stack, "
        "through the same handler Lambda calls. Prints the job's report as JSON.",
    )
    parser.add_argument("name", help="the job: a name given to @app.schedule in workers/app.py")
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="default: %(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    moto_port = int(os.environ.get("VIDLINE_MOTO_PORT") or DEFAULT_MOTO_PORT)
    worker_dir = (args.project_dir / "workers").resolve()
    try:
        env = stack_environment(args.project_dir.resolve(), moto_port)
        _use_environment(env)
        app, settings = _load_worker(worker_dir, args.name)
        report = run_job(
            app,
            args.name,
            region=os.environ.get("AWS_REGION", "us-east-1"),
            memory_mb=settings.memory_mb,
            timeout_s=settings.timeout_s,
        )
    except JobError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, default=str))
    return 0


def _use_environment(env: Mapping[str, str]) -> None:
    """Run with the stack's environment only: none of the caller's AWS or app settings."""
    for key in [k for k in os.environ if k.startswith(("AWS_", "VIDLINE_"))]:
        del os.environ[key]
    os.environ.update(env)


def _load_worker(worker_dir: Path, handler: str) -> tuple[Chalice, Any]:
    settings = lambda_settings(worker_dir, "local", handler)
    os.environ.update(local_environment(settings.environment, os.environ))
    os.chdir(worker_dir)
    try:
        return load_chalice_app(worker_dir / "app.py"), settings
    except Exception as error:
        raise JobError(f"could not load the worker app {worker_dir / 'app.py'}: {error!r}") from error


def run_timers(app: Chalice, every_s: float, stop: threading.Event, *, region: str) -> None:
    """Run every scheduled job of `app`, one after another, every `every_s`
    seconds until `stop` is set; a job that raises is logged and the others run."""
    while not stop.wait(every_s):
        for name in scheduled_jobs(app):
            if stop.is_set():
                return
            try:
                report = run_job(app, name, region=region)
            except Exception:
                logger.exception("scheduled job %s failed", name)
            else:
                logger.info("scheduled job %s: %s", name, json.dumps(report, default=str))


def timers_main(argv: Sequence[str] | None = None) -> int:
    """The stack's timer child: `python -m devstack.jobs --worker-dir DIR --every S`."""
    parser = argparse.ArgumentParser(prog="python -m devstack.jobs")
    parser.add_argument("--worker-dir", type=Path, required=True)
    parser.add_argument("--every", type=float, required=True, help="seconds between runs of every job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker_dir: Path = args.worker_dir.resolve()
    try:
        app, _ = _load_worker(worker_dir, "jobs")
    except JobError as error:
        logger.error("%s", error)
        return 2
    names = scheduled_jobs(app)
    logger.info("running %s every %g s", ", ".join(names) or "no scheduled job", args.every)
    run_timers(app, args.every, stop, region=os.environ.get("AWS_REGION", "us-east-1"))
    return 0


if __name__ == "__main__":
    raise SystemExit(timers_main())
