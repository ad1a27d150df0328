"""Child processes of the local stack, each in its own process group.

A group per child lets the stack stop a child together with everything it
started (chalice local's re-spawned worker, the worker's ffmpeg) and keeps
the terminal's Ctrl-C for the stack alone, which then stops them in order.
Their output is relayed line by line with a name in front.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_output_lock = threading.Lock()


def say(line: str, prefix: str = "stack") -> None:
    """Write one line to the stack's output, labelled with who said it."""
    with _output_lock:
        sys.stdout.write(f"{prefix:>7} | {line}\n" if prefix else f"{line}\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class ProcessInfo:
    """One process, as /proc/PID/stat describes it."""

    ppid: int
    pgid: int
    state: str  # "Z" for a zombie: exited, not yet reaped

    @property
    def running(self) -> bool:
        return self.state != "Z"


def process_table() -> dict[int, ProcessInfo]:
    """Every process on this machine by pid, from /proc (empty where there is none)."""
    table: dict[int, ProcessInfo] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ..."; comm may contain spaces and ")".
            state, ppid, pgid = stat_file.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        table[int(stat_file.parent.name)] = ProcessInfo(int(ppid), int(pgid), state)
    return table


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count)."""
    if not Path("/proc").is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return any(info.pgid == pgid and info.running for info in process_table().values())


class ChildProcess:
    """One long-running child process and its whole process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self._process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        self._relay = threading.Thread(target=self._relay_output, name=f"{name}-output", daemon=True)
        self._relay.start()

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self._process.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self._process.poll()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole group; SIGKILL whatever is left after `grace_s`."""
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=grace_s)
        # The leader may be gone while the rest of its group is still dying.
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._process.poll() is None or self._group_alive():
            self._signal_group(signal.SIGKILL)
            self._process.wait()
        self._relay.join(timeout=2)

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _group_alive(self) -> bool:
        return group_alive(self._process.pid)

    def _relay_output(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            say(raw.decode("utf-8", "replace").rstrip("\r\n"), prefix=self.name)
        self._process.stdout.close()
