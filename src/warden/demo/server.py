"""The API server of the demo, run by uvicorn in a background thread of the demo process."""

from __future__ import annotations

import errno
import socket
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from warden.errors import WardenError


class DemoError(WardenError):
    """The demo cannot run; the message says what to change."""

    type = "demo_error"


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a taken port is reported at once and plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} is already in use on {host} (another `warden demo` or "
                f"`warden serve`?); choose a free one with --port, e.g. --port {port + 1}",
                field="port",
            ) from None
        raise DemoError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="host"
        ) from None
    return sock


class BackgroundServer:
    """uvicorn serving `app` on an already bound socket, stopped with `stop()`.

    In a thread other than the main one uvicorn installs no signal handlers, so Ctrl-C stays
    with the demo, which then shuts the server down gracefully.
    """

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.port: int = port
        self._sock = sock
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [sock]},
            name="warden-demo-server",
            daemon=True,
        )

    def start(self, ready_url: str, *, timeout: float = 20.0) -> None:
        """Start serving and wait until `ready_url` (/readyz) answers 200."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    self.stop()
                    raise DemoError("the API server stopped while starting; see the log above")
                try:
                    if client.get(ready_url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise DemoError(
            f"the API server did not become ready at {ready_url} within "
            f"{timeout:g}s; the demo's traffic needs it on 127.0.0.1",
            field="host",
        )

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.ident is None:  # never started
            self._sock.close()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()
