"""A TCP proxy between Warden and PostgreSQL that a test can cut and restore — as a whole
(an outage: connections dropped, new ones refused) or at the next COMMIT, before it reaches
the server or after it went through with the answer lost."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

BEFORE = "before"
AFTER = "after"


class Proxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = _free_port()
        self.commit_cut: str | None = None  # one-shot: cut at the next COMMIT
        self.commit_cuts: list[str] = []  # the cuts that happened
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.restore()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def restore(self) -> None:
        """Accept connections again (the database is back)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.address)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """An outage: every connection drops at once, and new ones are refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def close(self) -> None:
        self._closed = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(client, server), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                cut = None
                if self.commit_cut and b"COMMIT" in data:
                    with self._lock:
                        cut, self.commit_cut = self.commit_cut, None
                    if cut:
                        self.commit_cuts.append(cut)
                if cut == BEFORE:
                    break  # COMMIT never reaches the server
                server.sendall(data)
                if cut == AFTER:
                    _drain_then_close(client, server)
                    return
        except OSError:
            pass
        _close(client, server)

    @staticmethod
    def _downstream(client: socket.socket, server: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _drain_then_close(client: socket.socket, server: socket.socket) -> None:
    """COMMIT went through: the client loses the answer, the server finishes the commit."""
    with suppress(OSError):
        client.shutdown(socket.SHUT_RDWR)
    client.close()
    with suppress(OSError):
        server.shutdown(socket.SHUT_WR)  # the server reads COMMIT, then the end of input


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
