"""The stuck-jobs job on the real local stack, run with `python -m devstack job`.

A video is left `processing` with no worker behind it: the event pump is
stopped (SIGSTOP), as if its job had died where nothing retries it. Running
the job requeues it once; running it again past the (shortened) timeout
fails it with one email. When the pump comes back and takes the requeued
job, the video is final already and nobody is emailed twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pynamodb.attributes import UTCDateTimeAttribute

from chalicelib.domain import utcnow
from chalicelib.housekeeping import STUCK_REASON
from devstack.aws import local_client
from devstack.client import ROOT, ApiClient, StackProcess
from tests.e2e.test_crashes import descendants, pump_pid, wait_until
from tests.media_tools import make_clip

pytestmark = pytest.mark.e2e

STUCK_AFTER_S = 3
# Long: the stack starts its job timers, but none fires during the test.
TIMER_INTERVAL_S = 3600


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    env = {
        "VIDLINE_STUCK_JOB_AFTER_S": str(STUCK_AFTER_S),
        "VIDLINE_LOCAL_JOB_INTERVAL_S": str(TIMER_INTERVAL_S),
    }
    with StackProcess(tmp_path_factory.mktemp("stack") / "stack.log", env=env) as running:
        yield running
    assert running.exit_code == 0, running.log_tail()


def devstack_job(stack: StackProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m devstack job ARGS` against `stack`, as a developer runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDLINE_", "AWS_"))}
    env["VIDLINE_MOTO_PORT"] = str(stack.ports["MOTO"])
    return subprocess.run(
        [sys.executable, "-m", "devstack", "job", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_job(stack: StackProcess, name: str) -> dict[str, Any]:
    done = devstack_job(stack, name)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def leave_processing(stack: StackProcess, video_id: str) -> None:
    """Make the stored video one a worker took a while ago and then vanished from."""
    dynamodb = local_client("dynamodb", f"http://127.0.0.1:{stack.ports['MOTO']}", "us-east-1")
    (item,) = [
        item
        for item in dynamodb.scan(TableName="vidline-videos")["Items"]
        if item["video_id"]["S"] == video_id
    ]
    long_ago = UTCDateTimeAttribute().serialize(utcnow() - timedelta(minutes=5))
    dynamodb.update_item(
        TableName="vidline-videos",
        Key={"owner_id": item["owner_id"], "video_id": item["video_id"]},
        UpdateExpression="SET #status = :processing, open_status = :processing, progress = :progress, "
        "upload_etag = :etag, updated_at = :long_ago",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":processing": {"S": "processing"},
            ":progress": {"N": "40"},
            ":etag": {"S": "0123456789abcdef0123456789abcdef"},
            ":long_ago": {"S": long_ago},
        },
    )


@pytest.mark.timeout(300)
def test_a_video_left_processing_is_requeued_then_failed_with_one_email(
    stack: StackProcess, tmp_path: Path
) -> None:
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_video(make_clip(tmp_path / "clip.mp4", seconds=1))["video"]["id"]
    pump = pump_pid(stack)
    os.kill(pump, signal.SIGSTOP)  # no worker behind the video from now on
    try:
        leave_processing(stack, video_id)

        first = run_job(stack, "stuck-jobs")
        assert (first["requeued"], first["errors"]) == (1, 0), first
        assert user.video(video_id)["status"] == "processing"
        time.sleep(STUCK_AFTER_S + 0.5)
        second = run_job(stack, "stuck-jobs")
    finally:
        os.kill(pump, signal.SIGCONT)

    video = user.video(video_id)
    assert (video["status"], video["error"]) == ("failed", STUCK_REASON), second
    assert len(stack.mail_to(user.email)) == 1
    # The worker, back, takes the requeued job: the video is final, no second email.
    taken = f"{video_id}/source (receive 1): duplicate"
    assert wait_until(lambda: taken in stack.log_tail(200_000), timeout_s=30), stack.log_tail()
    assert len(stack.messages_to(user.email)) == 1
    assert run_job(stack, "stuck-jobs")["looked_at"] == 0


def test_the_runner_lists_the_jobs_for_an_unknown_name(stack: StackProcess) -> None:
    done = devstack_job(stack, "no-such-job")

    assert done.returncode == 2
    assert "no scheduled job named 'no-such-job'" in done.stderr
    for name in ("abandoned-uploads", "stuck-jobs"):
        assert name in done.stderr


def test_the_runner_says_when_no_stack_runs_on_the_port(stack: StackProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDLINE_", "AWS_"))}
    env["VIDLINE_MOTO_PORT"] = "1"  # nothing ever runs a stack there
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "job", "stuck-jobs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "the local stack is not running" in done.stderr


def test_the_stack_runs_the_jobs_on_timers_in_a_child_of_its_own(stack: StackProcess) -> None:
    assert f"scheduled jobs        every {TIMER_INTERVAL_S} s" in stack.log_tail(100_000)
    timers = [command for command in descendants(stack.pid).values() if " -m devstack.jobs " in command]
    assert len(timers) == 1, descendants(stack.pid)
    assert wait_until(lambda: "running abandoned-uploads" in stack.log_tail(100_000), timeout_s=30)
