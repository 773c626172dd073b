"""A stopping server gives requests in flight `--grace` seconds, then closes their connections:
one slow or stuck client must not keep a replica from stopping (rolling deploys, SIGTERM from
an orchestrator)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.serving import serve


@pytest.mark.slow
def test_sigterm_stops_within_the_grace_while_a_request_is_stuck(tmp_path: Path) -> None:
    proc, url, secret = serve(tmp_path, "--grace", "1")
    port = int(url.rsplit(":", 1)[1])
    stuck: socket.socket | None = None
    try:
        # An authenticated request whose body never arrives: the app waits for it.
        stuck = socket.create_connection(("127.0.0.1", port), timeout=5)
        stuck.sendall(
            (
                "POST /v1/decisions HTTP/1.1\r\nHost: warden\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{"
            ).encode()
        )
        time.sleep(1.0)  # the request has reached the app
        assert proc.poll() is None
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)  # without a grace the server waits for the body forever
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not stop after its grace period") from None
        assert time.monotonic() - began < 30
    finally:
        if stuck is not None:
            stuck.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
