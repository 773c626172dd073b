"""Callbacks: the final decision, POSTed as a signed webhook, at least once.

Deliveries are an outbox: a row written in the transaction that makes the decision final, so a
crash can never lose one. `WebhookSender` (one per replica) takes due rows with
`FOR UPDATE SKIP LOCKED` and a short in-flight lease, posts them, and on failure retries with
exponential backoff; after the last attempt the row stays as a dead letter with its last error.

Every post carries two signatures over the same body (see `warden.outbound.signing`): the
Stripe-style `Warden-Signature: t=<unix seconds>,v1=<hex>` and the Standard Webhooks
`webhook-id`/`webhook-timestamp`/`webhook-signature`. Receivers recompute one and reject old
timestamps. Targets are checked against `WARDEN_WEBHOOK_ALLOW` and the internal ranges before
every post (see `warden.outbound.egress`); a refused target is a dead letter at once.
"""

from __future__ import annotations

import logging
import threading
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
from warden.outbound.deliver import post_signed
from warden.outbound.egress import AllowList, EgressRefused, Resolver, system_resolver
from warden.outbound.secrets import SECRET_ENV, webhook_secret
from warden.outbound.signing import SIGNATURE_HEADER, sign, verify
from warden.store.database import write_connection
from warden.store.schema import webhook_deliveries

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
__all__ = ["SECRET_ENV", "SIGNATURE_HEADER", "WebhookSender", "deliveries", "sign", "verify"]


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
        allow: AllowList | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.db = db
        self.allow = allow
        self.resolver = resolver
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
        extra = {"Warden-Delivery": row.id, "Warden-Attempt": str(row.attempts + 1)}
        error: str | None = None
        final = False
        try:
            response = post_signed(
                self.client,
                row.url,
                body,
                secret=self.secret,
                msg_id=row.id,
                extra_headers=extra,
                allow=self.allow,
                resolver=self.resolver,
            )
            if response.is_redirect:
                error = f"HTTP {response.status_code}: redirects are not followed"
            elif not response.is_success:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
        except EgressRefused as exc:
            error, final = f"refused: {exc.message}", True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(row, error, final=final)

    def _record(self, row: Any, error: str | None, *, final: bool = False) -> None:
        now = self.clock()
        attempts = row.attempts + 1
        t = webhook_deliveries
        if error is None:
            values: dict[str, Any] = {
                "status": DeliveryStatus.DELIVERED,
                "finished_at": now,
                "last_error": None,
            }
        elif final or attempts >= self.backoff.attempts:
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
