"""The background workers of review that `warden serve` runs in every replica."""

from __future__ import annotations

from typing import Protocol

from warden.outbound.secrets import register
from warden.review.desk import ReviewDesk
from warden.review.expiry import ExpiryWorker
from warden.review.notify import WebhookSender


class Worker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def review_workers(desk: ReviewDesk) -> list[Worker]:
    """SLA expiry and webhook delivery; both are safe to run in any number of replicas."""
    register(desk.db)  # alert webhooks sign with the same secret
    return [
        ExpiryWorker(desk.expire_due),
        WebhookSender(desk.db, clock=desk.clock),
    ]
