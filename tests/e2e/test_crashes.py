"""Crashes on the real local stack: a killed worker, a killed stack, a stop mid-encode.

Each test starts `python -m devstack` (moto, chalice local, the event pump and
the real worker with ffmpeg) and does to it what a crash or a developer does:
SIGKILL the event pump during an encode, SIGKILL the whole stack and start it
again on the same ports, stop the worker during a job's last attempt.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.client import ApiClient, StackProcess
from devstack.processes import process_table
from devstack.stack import bind_error
from tests.media_tools import make_clip

pytestmark = pytest.mark.e2e

OVERRIDDEN_BUCKET = "e2e-uploads-elsewhere"


def descendants(pid: int) -> dict[int, str]:
    """Every running process below `pid`, with its command line."""
    table = process_table()
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        for child, info in table.items():
            if info.ppid == parent and info.running and child not in found:
                found[child] = command_line(child)
                pending.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    info = process_table().get(pid)
    return info is not None and info.running


def pump_pid(stack: StackProcess) -> int:
    [pid] = [pid for pid, command in descendants(stack.pid).items() if " -m devstack.pump " in command]
    return pid


def wait_until(condition: Callable[[], Any], timeout_s: float, poll_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll_s)
    return condition()


def port_free(port: int) -> bool:
    return bind_error("127.0.0.1", port) is None


def encoding(stack: StackProcess, user: ApiClient, video_id: str, min_progress: int = 10) -> dict[str, Any]:
    """The video once its encode is under way (status processing, progress past `min_progress`)."""
    deadline = time.monotonic() + 90
    while True:
        video = user.video(video_id)
        if video["status"] == "processing" and video["progress"] > min_progress:
            return video
        assert video["status"] not in ("ready", "failed"), f"finished before it could be interrupted: {video}"
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.1)


def finish(stack: StackProcess, user: ApiClient, video_id: str, timeout_s: float = 180) -> dict[str, Any]:
    try:
        return user.wait_until_final(video_id, timeout_s=timeout_s)[0]
    except TimeoutError:
        pytest.fail(f"video did not finish; stack log:\n{stack.log_tail(20_000)}")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> Iterator[StackProcess]:
    """A stack whose uploads bucket is not the one .chalice/config.json names."""
    env = {"VIDLINE_UPLOADS_BUCKET": OVERRIDDEN_BUCKET, "VIDLINE_WORK_DIR": str(work_dir)}
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    with StackProcess(log, env=env) as running_stack:
        yield running_stack


def test_an_overridden_bucket_name_is_the_one_uploads_go_to(stack: StackProcess, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "short.mp4", seconds=1)
    user = ApiClient.sign_up(stack.api)

    created = user.create_video(source)
    upload = created["upload"]
    assert OVERRIDDEN_BUCKET in upload["url"] or upload["fields"].get("bucket") == OVERRIDDEN_BUCKET, upload
    user.upload(upload, source)

    video = finish(stack, user, created["video"]["id"])
    assert video["status"] == "ready", f"{video['error']}\n{stack.log_tail(20_000)}"


@pytest.mark.timeout(420)
def test_a_worker_killed_mid_encode_is_restarted_and_the_video_still_becomes_ready(
    stack: StackProcess, work_dir: Path, tmp_path: Path
) -> None:
    source = make_clip(tmp_path / "long.mp4", seconds=20, size="1920x1080")
    user = ApiClient.sign_up(stack.api)
    video_id = user.create_and_upload(source)
    encoding(stack, user, video_id)
    pump = pump_pid(stack)
    ffmpegs = [pid for pid, command in descendants(pump).items() if "ffmpeg" in command]
    assert ffmpegs, descendants(pump)
    scratch = job_dirs(work_dir)
    assert scratch, "the job should be working in a directory under VIDLINE_WORK_DIR"

    os.kill(pump, signal.SIGKILL)
    killed = time.monotonic()
    # No ffmpeg outlives its worker.
    assert wait_until(lambda: not [pid for pid in ffmpegs if running(pid)], timeout_s=5), ffmpegs
    restarted = "the event pump died (killed by SIGKILL); restarting it in 1 s"
    assert wait_until(lambda: restarted in stack.log_tail(100_000), timeout_s=10), stack.log_tail()
    assert wait_until(lambda: pump_pid_or_none(stack) not in (None, pump), timeout_s=60), stack.log_tail()
    back_s = time.monotonic() - killed

    video = finish(stack, user, video_id)
    done_s = time.monotonic() - killed
    print(f"pump back {back_s:.1f} s after SIGKILL; video ready {done_s:.1f} s after it")
    assert video["status"] == "ready", f"{video['error']}\n{stack.log_tail(20_000)}"
    assert len(stack.mail_to(user.email)) == 1
    # The killed job's scratch directory went with the next job's start.
    assert not scratch & job_dirs(work_dir), sorted(work_dir.iterdir())


def job_dirs(work_dir: Path) -> set[Path]:
    return {path for path in work_dir.iterdir() if path.is_dir()}


def pump_pid_or_none(stack: StackProcess) -> int | None:
    pids = [pid for pid, command in descendants(stack.pid).items() if " -m devstack.pump " in command]
    return pids[0] if pids else None


@pytest.mark.timeout(420)
def test_a_killed_stack_takes_its_children_along_and_a_stop_on_the_last_attempt_fails_nothing(
    tmp_path: Path,
) -> None:
    # One attempt per job: an interruption that counted would fail the video.
    env = {"VIDLINE_JOB_MAX_RECEIVES": "1", "VIDLINE_WORK_DIR": str(tmp_path)}
    first = StackProcess(tmp_path / "first.log", env=env)
    with first:
        children = descendants(first.pid)
        assert any("devstack.pump" in command for command in children.values()), children
        assert any("devstack.api" in command for command in children.values()), children
        first.kill()
        killed = time.monotonic()
        assert wait_until(lambda: not [pid for pid in children if running(pid)], timeout_s=10), children
        gone_s = time.monotonic() - killed
        assert wait_until(lambda: all(port_free(port) for port in first.ports.values()), timeout_s=5)
    print(f"the stack's children were gone {gone_s:.1f} s after its SIGKILL")

    # The next start on the same ports is not blocked by anything.
    second = StackProcess(tmp_path / "second.log", env=env, ports=first.ports)
    with second:
        source = make_clip(tmp_path / "clip.mp4", seconds=10, size="1920x1080")
        user = ApiClient.sign_up(second.api)
        video_id = user.create_and_upload(source)
        encoding(second, user, video_id)
        # What Ctrl-C or a code reload does to the worker: SIGTERM to it and its ffmpeg.
        pump = pump_pid(second)
        os.killpg(pump, signal.SIGTERM)
        assert wait_until(lambda: "is back on the queue" in second.log_tail(100_000), timeout_s=20)

        video = finish(second, user, video_id)
        assert video["status"] == "ready", f"{video['error']}\n{second.log_tail(20_000)}"
        [mail] = second.mail_to(user.email)
        assert "is ready" in mail["subject"]

        # Ctrl-C of the stack itself during the last attempt gives the job back the same way.
        other = user.create_and_upload(source, title="Stopped with the stack")
        encoding(second, user, other)
        assert second.terminate() == 0, second.log_tail()
    log = second.log_path.read_text()
    assert log.count("is back on the queue") == 2, log[-5000:]
    assert "Traceback" not in log, log[-5000:]
