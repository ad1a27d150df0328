"""Who holds a port, and whether it is a leftover of a crashed local stack.

A stack that was SIGKILLed used to leave `chalice local` holding its port,
which then blocked the next `make dev`. The stack marks every child it
starts with two environment variables (its project directory and its own
pid); a process holding a port that carries this project's mark, and whose
stack is no longer running, is provably ours and safe to stop. So is an
unmarked one (from a version before the marks) whose command line is
`chalice --project-dir THIS local`, `-m devstack.api --project-dir THIS` or
`-m devstack.pump --worker-dir THIS/...` (relative paths read from its own
working directory) and that is an orphan (its parent is gone, so it was
handed to init): one run by hand from a shell has that shell as its parent,
and is somebody's. Anything else is only named, with what to do.

Linux only (it reads /proc); elsewhere nothing is found and the stack just
says the port is taken.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Set on each child of the stack: which project it serves and which stack started it.
PROJECT_MARK = "DEVSTACK_PROJECT_DIR"
STACK_PID_MARK = "DEVSTACK_STACK_PID"

_LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class PortHolder:
    """A process with a listening socket on a port."""

    pid: int
    argv: tuple[str, ...]
    ppid: int
    project_dir: str | None  # from its mark; None when it is not a stack's child
    stack_pid: int | None
    cwd: str | None = None  # its working directory, which relative paths in argv are against

    @property
    def command(self) -> str:
        """Its command line, for people."""
        return " ".join(self.argv) or "?"

    def leftover_of(self, project_dir: Path) -> bool:
        """Whether this is a child of a stack for `project_dir` that is gone."""
        project_dir = project_dir.resolve()
        if self.project_dir is not None:
            if Path(self.project_dir) != project_dir:
                return False
            return self.stack_pid is None or not _is_devstack(self.stack_pid)
        return self.ppid == 1 and _serves(self.argv, project_dir, self.cwd)


def _serves(argv: Sequence[str], project_dir: Path, cwd: str | None) -> bool:
    # An unmarked chalice local, API or pump of `project_dir`, by its arguments.
    def option(name: str) -> Path | None:
        if name not in argv[:-1]:
            return None
        path = Path(argv[argv.index(name) + 1])
        if not path.is_absolute():
            if cwd is None:
                return None  # relative to a directory we cannot see: not provably ours
            path = Path(cwd) / path
        return path.resolve()

    names = [Path(arg).name for arg in argv[:2]]
    if "chalice" in names and "local" in argv:
        return option("--project-dir") == project_dir
    if "devstack.api" in argv:
        return option("--project-dir") == project_dir
    if "devstack.pump" in argv:
        worker_dir = option("--worker-dir")
        return worker_dir is not None and worker_dir.is_relative_to(project_dir)
    return False


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[int]:
    """The inodes of the TCP sockets listening on `port` (any address, IPv4 or IPv6)."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def port_holders(port: int, proc: Path = Path("/proc")) -> list[PortHolder]:
    """The processes (of those whose files we may read) listening on `port`."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not wanted:
        return []
    holders = []
    for process_dir in proc.glob("[0-9]*"):
        try:
            descriptors = list((process_dir / "fd").iterdir())
        except OSError:  # another user's process, or gone
            continue
        for fd in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    holders.append(_holder(int(process_dir.name), proc))
                    break
    return holders


def stop_process_group(pid: int, grace_s: float = 5.0, *, whole_group: bool = True) -> bool:
    """SIGTERM `pid` and, with `whole_group`, its process group (the stack
    starts each child as a group leader, so its ffmpeg goes too); SIGKILL after
    `grace_s`. True once `pid` is gone. Only a marked child of a stack is
    known to lead a group the stack made: for anything else pass False."""
    leads_group = False
    with contextlib.suppress(OSError):
        leads_group = whole_group and os.getpgid(pid) == pid
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leads_group:  # its ffmpeg too
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _exists(pid):
                return True
            time.sleep(0.05)
    return not _exists(pid)


def _holder(pid: int, proc: Path) -> PortHolder:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
        ppid = int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        raw, ppid = b"", 0
    environ = _environ(pid, proc)
    stack_pid = environ.get(STACK_PID_MARK, "")
    try:
        cwd: str | None = os.readlink(proc / str(pid) / "cwd")
    except OSError:
        cwd = None
    return PortHolder(
        pid=pid,
        argv=tuple(arg.decode(errors="replace") for arg in raw.split(b"\0") if arg),
        ppid=ppid,
        project_dir=environ.get(PROJECT_MARK),
        stack_pid=int(stack_pid) if stack_pid.isdigit() else None,
        cwd=cwd,
    )


def _environ(pid: int, proc: Path) -> dict[str, str]:
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _is_devstack(pid: int) -> bool:
    # A stack is `python -m devstack`; a pid reused by anything else is not one.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"devstack" in argv


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
