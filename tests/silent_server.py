"""A loopback server that takes connections and never answers: a dependency that hangs."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class SilentServer:
    """Accepts every connection and holds it, silent, until closed. It counts
    the connections made to it: one per attempt of a client that gives up
    after a timeout."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                self._held.append(self._listener.accept()[0])

    def connections(self) -> int:
        """The connections made to it so far. One more of ours is accepted
        after all those before it (the backlog is first in, first out)."""
        with socket.create_connection(("127.0.0.1", self.port)) as ours:
            mine = ours.getsockname()
            deadline = time.monotonic() + 10
            while not any(held.getpeername() == mine for held in list(self._held)):
                assert time.monotonic() < deadline, "the silent server took no connection"
                time.sleep(0.01)
            return len(self._held) - 1

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for connection in self._held:
            connection.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
