"""A real redis-server for tests: on a free loopback port, in a temporary
directory, persisting nothing, stopped (and its directory removed) at the end.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

The binary is $VIDLINE_REDIS_SERVER, else Debian's /usr/bin/redis-server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from types import TracebackType

import redis

from devstack.client import free_port

DEFAULT_BINARY = "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process; `start()` returns once it answers."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or os.environ.get("VIDLINE_REDIS_SERVER", DEFAULT_BINARY)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        if not shutil.which(self.binary):
            raise RuntimeError(
                f"redis-server not found at {self.binary}: install Debian's redis-server "
                "or set VIDLINE_REDIS_SERVER"
            )
        self._dir = tempfile.mkdtemp(prefix="vidline-redis-")
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                self.stop()
                raise RuntimeError(f"redis-server exited at start: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory; safe to repeat."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _answers(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
