"""Callbacks: the final decision, POSTed as a signed webhook, at least once.

Deliveries are an outbox: a row written in the transaction that makes the decision final, so a
crash can never lose one. `WebhookSender` (one per replica) takes due rows with
`FOR UPDATE SKIP LOCKED` and a short in-flight lease, posts them, and on failure retries with
exponential backoff; after the last attempt the row stays as a dead letter with its last error.

Signature (as Stripe's): header `Warden-Signature: t=<unix seconds>,v1=<hex>` where
`<hex> = HMAC-SHA256(secret, f"{t}.{body}")`. Receivers recompute it and reject old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

import warden
from warden.decision import Decision
from warden.ids import new_id
from warden.store.database import write_connection
from warden.store.schema import server_secrets, webhook_deliveries

log = logging.getLogger(__name__)

SECRET_ENV = "WARDEN_WEBHOOK_SECRET"
SECRET_NAME = "webhook"
SIGNATURE_HEADER = "Warden-Signature"
TOLERANCE_SECONDS = 300


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


def delivery_row(decision: Decision, url: str, now: datetime) -> dict[str, Any]:
    """An outbox row carrying the final decision, written with the state change."""
    delivery_id = new_id()
    body = {
        "type": "decision.final",
        "delivery_id": delivery_id,
        "decision": decision.model_dump(mode="json"),
    }
    return {
        "id": delivery_id,
        "decision_id": decision.id,
        "url": url,
        "body": orjson.dumps(body).decode(),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "created_at": now,
        "finished_at": None,
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """What a receiver does: recompute the signature and refuse stale timestamps."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def webhook_secret(db: sa.Engine) -> str:
    """`WARDEN_WEBHOOK_SECRET`, or one generated once and kept in the database for all replicas."""
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return configured
    with write_connection(db) as conn, conn.begin():
        found = conn.execute(
            sa.select(server_secrets.c.value).where(server_secrets.c.name == SECRET_NAME)
        ).scalar()
        if found is not None:
            return str(found)
        value = "whsec_" + secrets.token_urlsafe(32)
        conn.execute(
            server_secrets.insert().values(
                name=SECRET_NAME, value=value, created_at=datetime.now(UTC)
            )
        )
        return value


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt n+1: base * 2**(n-1), capped; `attempts` tries in all."""

    attempts: int = 8
    base: float = 2.0
    cap: float = 600.0

    def delay(self, attempts_made: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, attempts_made - 1)))


class WebhookSender:
    """Posts due deliveries from a background thread; `run_once()` does one pass (tests)."""

    def __init__(
        self,
        db: sa.Engine,
        *,
        secret: str | Callable[[], str] | None = None,
        backoff: Backoff | None = None,
        interval: float = 1.0,
        timeout: float = 10.0,
        in_flight: float = 60.0,
        batch: int = 20,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.db = db
        self._secret = secret
        self._resolved: str | None = secret if isinstance(secret, str) else None
        self.backoff = backoff or Backoff()
        self.interval = interval
        self.in_flight = in_flight
        self.batch = batch
        self.clock = clock
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._postgres = db.dialect.name == "postgresql"

    @property
    def secret(self) -> str:
        if self._resolved is None:
            self._resolved = self._secret() if callable(self._secret) else webhook_secret(self.db)
        return self._resolved

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self._timeout,
                transport=self._transport,
                headers={"User-Agent": f"warden-webhooks/{warden.__version__}"},
            )
        return self._client

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="warden-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                log.exception("webhook pass failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(self.interval)

    def run_once(self) -> int:
        """Take due deliveries, post each once, record the result. Returns how many were tried."""
        taken = self._take()
        for row in taken:
            self._deliver(row)
        return len(taken)

    def _take(self) -> list[Any]:
        now = self.clock()
        t = webhook_deliveries
        query = (
            sa.select(t)
            .where(t.c.status == DeliveryStatus.PENDING, t.c.next_attempt_at <= now)
            .order_by(t.c.next_attempt_at)
            .limit(self.batch)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with write_connection(self.db) as conn, conn.begin():
            rows = conn.execute(query).all()
            if rows:  # an in-flight lease: a replica that dies mid-post leaves it to be retried
                conn.execute(
                    t.update()
                    .where(t.c.id.in_([r.id for r in rows]))
                    .values(
                        attempts=t.c.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=self.in_flight),
                    )
                )
        return list(rows)

    def _deliver(self, row: Any) -> None:
        body = row.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            "Warden-Delivery": row.id,
            "Warden-Attempt": str(row.attempts + 1),
        }
        error: str | None = None
        try:
            response = self.client.post(row.url, content=body, headers=headers)
            if not response.is_success:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(row, error)

    def _record(self, row: Any, error: str | None) -> None:
        now = self.clock()
        attempts = row.attempts + 1
        t = webhook_deliveries
        if error is None:
            values: dict[str, Any] = {
                "status": DeliveryStatus.DELIVERED,
                "finished_at": now,
                "last_error": None,
            }
        elif attempts >= self.backoff.attempts:
            values = {"status": DeliveryStatus.DEAD, "finished_at": now, "last_error": error}
            log.warning(
                "webhook %s to %s dead after %d attempts: %s", row.id, row.url, attempts, error
            )
        else:
            delay = timedelta(seconds=self.backoff.delay(attempts))
            values = {"next_attempt_at": now + delay, "last_error": error}
        with write_connection(self.db) as conn, conn.begin():
            conn.execute(t.update().where(t.c.id == row.id).values(**values))


def deliveries(
    conn: sa.Connection, *, status: str | None = None, decision_id: str | None = None
) -> list[dict[str, Any]]:
    """Delivery records, newest first: where each went, how often it was tried, its last error."""
    t = webhook_deliveries
    query = sa.select(t).order_by(t.c.created_at.desc()).limit(500)
    if status:
        query = query.where(t.c.status == status)
    if decision_id:
        query = query.where(t.c.decision_id == decision_id)
    return [{k: v for k, v in r._mapping.items() if k != "body"} for r in conn.execute(query).all()]
