"""Child processes of the local stack, each in its own process group.

A group per child lets the stack stop a child together with everything it
started (the worker's ffmpeg) and keeps the terminal's Ctrl-C for the stack
alone, which then stops them in order. Their output is relayed line by line
with a name in front.

Each child also dies with the stack: on Linux it asks the kernel for a
parent-death signal (`PR_SET_PDEATHSIG`), so a SIGKILLed stack leaves no
server holding a port. The kernel sends it when the *thread* that spawned
the child exits, so children are spawned from the stack's main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Loaded once here: a forked child about to exec should not load libraries.
_prctl = _load_prctl()


def die_with_parent(signum: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `signum` when its parent dies.

    None where the kernel has no such thing (not Linux): the children's own
    watchdogs (the pump's) are all there is then.
    """
    if _prctl is None:
        return None
    prctl, parent = _prctl, os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was in
            os._exit(1)

    return in_child


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
        parent_death_signal: signal.Signals = signal.SIGKILL,
    ) -> None:
        self.name = name
        self.started_at = time.monotonic()
        self.stop_requested = False
        self._process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            preexec_fn=die_with_parent(parent_death_signal),
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

    def wait_for_exit(self, timeout_s: float = 10.0) -> int | None:
        """Wait up to `timeout_s` for the child to exit; its exit code, or None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._process.wait(timeout=timeout_s)
        return None

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of the child's group once the child itself is gone
        (an encode whose worker was killed)."""
        if self._group_alive():
            self._signal_group(signal.SIGKILL)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole group; SIGKILL whatever is left after `grace_s`."""
        self.stop_requested = True
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


def describe_exit(code: int) -> str:
    """A process's exit status for people: "exit code 1" or "killed by SIGKILL"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
