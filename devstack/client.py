"""Drive a running local stack from Python: start it, and call its API.

Used by the end-to-end tests and the benchmarks; also a small, working
example of calling the REST API from a client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from devstack.stack import READY_LINE

ROOT = Path(__file__).resolve().parent.parent
FINAL_STATUSES = ("ready", "failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StackProcess:
    """`python -m devstack` as a child process on free ports.

    Use as a context manager: entering waits for the ready line, leaving
    stops the stack with SIGTERM and records its exit code. `env` adds
    settings (e.g. `VIDLINE_WORK_DIR`); `ports` reuses another stack's ports
    (keys API, MOTO, MAILBOX, CDN, S3_FRONT).
    """

    def __init__(
        self,
        log_path: Path,
        start_timeout_s: float = 120,
        *,
        env: Mapping[str, str] | None = None,
        ports: Mapping[str, int] | None = None,
    ):
        names = ("API", "MOTO", "MAILBOX", "CDN", "S3_FRONT")
        self.ports = dict(ports or {name: free_port() for name in names})
        self.api = f"http://127.0.0.1:{self.ports['API']}"
        self.mailbox = f"http://127.0.0.1:{self.ports['MAILBOX']}"
        self.cdn = f"http://127.0.0.1:{self.ports['CDN']}"
        self.log_path = log_path
        self._env = dict(env or {})
        self._timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        """The stack's process id (`python -m devstack`)."""
        assert self._process is not None, "the stack was not started"
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL the stack process alone, as a crash would; its children are left to die with it."""
        assert self._process is not None, "the stack was not started"
        self._process.kill()
        self.exit_code = self._process.wait()

    def terminate(self) -> int:
        """SIGTERM the stack (what Ctrl-C in `make dev` does) and wait; its exit code."""
        self.__exit__(None, None, None)
        assert self.exit_code is not None
        return self.exit_code

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> StackProcess:
        # A clean environment: no real AWS settings or credentials leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDLINE_", "AWS_"))}
        env.update({f"VIDLINE_{name}_PORT": str(port) for name, port in self.ports.items()})
        env.update(self._env)
        with self.log_path.open("w") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "devstack"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._timeout_s
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the local stack did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            self.exit_code = process.returncode if process else None
            return
        process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = process.wait(timeout=45)  # its children have 5 s each, the pump 15 s
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            self.exit_code = process.wait()

    def messages_to(self, email: str) -> list[dict[str, Any]]:
        """Mail the local mailbox holds for `email`, newest first."""
        messages: list[dict[str, Any]] = requests.get(f"{self.mailbox}/api/messages", timeout=10).json()
        return [m for m in messages if email in m["to"]]

    def mail_to(self, email: str, timeout_s: float = 15, settle_s: float = 1.0) -> list[dict[str, Any]]:
        """Mail for `email` once some has come (the worker emails just after it
        records the outcome), after `settle_s` more for any duplicate; newest first."""
        deadline = time.monotonic() + timeout_s
        while not self.messages_to(email) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle_s)
        return self.messages_to(email)


@dataclass
class ApiClient:
    """A signed-in user of the REST API."""

    base_url: str
    email: str
    token: str

    @classmethod
    def sign_up(cls, base_url: str, password: str = "Corr3ct-Horse!") -> ApiClient:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        credentials = {"email": email, "password": password}
        response = requests.post(f"{base_url}/auth/signup", json=credentials, timeout=30)
        response.raise_for_status()
        response = requests.post(f"{base_url}/auth/login", json=credentials, timeout=30)
        response.raise_for_status()
        return cls(base_url, email, response.json()["id_token"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def create_and_upload(self, path: Path, content_type: str = "video/mp4", title: str = "A clip") -> str:
        """Create a video, then send the file straight to storage with the
        presigned POST: every policy field first, the file last."""
        created = self.create_video(path, content_type, title)
        self.upload(created["upload"], path, content_type)
        video_id: str = created["video"]["id"]
        return video_id

    def create_video(
        self, path: Path, content_type: str = "video/mp4", title: str = "A clip"
    ) -> dict[str, Any]:
        """`POST /videos` for the file at `path`: `{video, upload}`."""
        body: dict[str, Any] = {
            "title": title,
            "filename": path.name,
            "content_type": content_type,
            "size_bytes": path.stat().st_size,
        }
        response = requests.post(f"{self.base_url}/videos", json=body, headers=self.headers, timeout=30)
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def upload(self, upload: dict[str, Any], path: Path, content_type: str = "video/mp4") -> None:
        """Send the file with a presigned POST: every policy field first, the file last."""
        with path.open("rb") as file:
            sent = requests.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (path.name, file, content_type)},
                timeout=120,
            )
        sent.raise_for_status()

    def list_videos(self) -> list[dict[str, Any]]:
        """The first page of this user's videos, newest first."""
        response = requests.get(f"{self.base_url}/videos", headers=self.headers, timeout=30)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def video(self, video_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/videos/{video_id}", headers=self.headers, timeout=30)
        response.raise_for_status()
        video: dict[str, Any] = response.json()
        return video

    def wait_until_final(
        self, video_id: str, timeout_s: float = 120, poll_s: float = 0.25
    ) -> tuple[dict[str, Any], list[int]]:
        """The video once ready or failed, and the progress values seen on the way."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            video = self.video(video_id)
            seen.append(video["progress"])
            if video["status"] in FINAL_STATUSES:
                return video, seen
            time.sleep(poll_s)
        raise TimeoutError(f"video {video_id} did not finish within {timeout_s} s")
