"""Callbacks: signed with HMAC-SHA256, retried with backoff, dead-lettered after the last try.

The receiver is a real HTTP server on 127.0.0.1 that fails the first requests on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from tests.ledger_helpers import assert_state_agrees
from tests.reviewing import REVIEW_INPUT, Clock, review_points, reviewer
from warden.engine import Engine
from warden.errors import InvalidRequest
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.review.notify import Backoff, WebhookSender, deliveries, sign, verify

SECRET = "whsec_test"


class Receiver:
    """Answers 500 to the first `failures` requests, then 200; keeps what it received."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                failing = len(receiver.received) <= receiver.failures
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"nope" if failing else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver runs on 127.0.0.1, which webhooks may reach only when allowed explicitly."""
    monkeypatch.setenv("WARDEN_WEBHOOK_ALLOW", "127.0.0.1")


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "points")), db, actor="test")
    yield eng
    eng.close()


def _reviewed(engine: Engine, clock: Clock, url: str) -> str:
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller", callback_url=url)
    desk = ReviewDesk(engine, clock=clock)
    _, alice = reviewer(engine)
    desk.claim(alice, decision.id)
    desk.override(alice, decision.id, outcome="decline", reason="too much debt")
    return decision.id


def test_a_failing_receiver_gets_the_decision_after_retries(engine: Engine) -> None:
    receiver = Receiver(failures=2)
    clock = Clock()
    try:
        decision_id = _reviewed(engine, clock, receiver.url)
        sender = WebhookSender(engine.db, secret=SECRET, backoff=Backoff(attempts=5), clock=clock)
        assert sender.run_once() == 1  # attempt 1 fails
        assert sender.run_once() == 0  # not due yet: backoff 2 s
        clock.advance(2)
        assert sender.run_once() == 1  # attempt 2 fails; backoff doubles to 4 s
        clock.advance(3)
        assert sender.run_once() == 0
        clock.advance(1)
        assert sender.run_once() == 1  # attempt 3 succeeds
        sender.stop()
    finally:
        receiver.close()
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert verify(SECRET, body, headers["Warden-Signature"])
    assert not verify("wrong-secret", body, headers["Warden-Signature"])
    assert headers["Warden-Attempt"] == "3"
    payload = orjson.loads(body)
    assert payload["type"] == "decision.final"
    assert payload["decision"]["id"] == decision_id and payload["decision"]["outcome"] == "decline"
    with engine.db.connect() as conn:
        (record,) = deliveries(conn, decision_id=decision_id)
    assert record["status"] == "delivered" and record["attempts"] == 3
    assert record["last_error"] is None
    assert_state_agrees(engine.db)  # the task's callback URL follows from its event


def test_the_last_failure_leaves_a_dead_letter(engine: Engine) -> None:
    receiver = Receiver(failures=100)
    clock = Clock()
    try:
        decision_id = _reviewed(engine, clock, receiver.url)
        sender = WebhookSender(engine.db, secret=SECRET, backoff=Backoff(attempts=3), clock=clock)
        for _ in range(3):
            sender.run_once()
            clock.advance(600)
        assert sender.run_once() == 0  # dead letters are never retried
        sender.stop()
    finally:
        receiver.close()
    assert len(receiver.received) == 3
    with engine.db.connect() as conn:
        (record,) = deliveries(conn, status="dead")
    assert record["decision_id"] == decision_id and record["attempts"] == 3
    assert "HTTP 500" in record["last_error"]


def test_an_unreachable_receiver_is_retried_not_lost(engine: Engine) -> None:
    clock = Clock()
    decision_id = _reviewed(engine, clock, "http://127.0.0.1:9/unreachable")
    sender = WebhookSender(engine.db, secret=SECRET, clock=clock, timeout=2)
    assert sender.run_once() == 1
    sender.stop()
    with engine.db.connect() as conn:
        (record,) = deliveries(conn, decision_id=decision_id)
    assert record["status"] == "pending" and record["attempts"] == 1
    assert "Connect" in record["last_error"]


def test_signature_rejects_tampering_and_old_timestamps() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    assert verify(SECRET, body, header, now=1_700_000_100)
    assert not verify(SECRET, b'{"a":2}', header, now=1_700_000_100)
    assert not verify(SECRET, body, header, now=1_700_001_000)
    assert not verify(SECRET, body, "garbage", now=1_700_000_000)


def test_callback_url_must_be_http(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="callback_url"):
        engine.decide("loan_approval", REVIEW_INPUT, callback_url="file:///etc/passwd")
