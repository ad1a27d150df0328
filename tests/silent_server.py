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
        self._peers: list[tuple[str, int]] = []  # of the connections taken, in order
        self._probes: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                connection, peer = self._listener.accept()
                self._held.append(connection)
                self._peers.append(peer)

    def connections(self) -> int:
        """The connections clients made to it so far. A probe of ours is
        accepted after all those before it (the backlog is first in, first
        out), and is then left out of the count."""
        with socket.create_connection(("127.0.0.1", self.port)) as probe:
            mine = probe.getsockname()
            deadline = time.monotonic() + 10
            while mine not in self._peers:
                assert time.monotonic() < deadline, "the silent server took no connection"
                time.sleep(0.01)
            self._probes.add(mine)
            return len(self._peers) - len(self._probes)

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
