"""Where alert notices go besides the ledger: the log and a Slack-compatible webhook.

Webhooks are posted from their own thread with a short timeout and a few retries, so a slow
receiver never holds up the monitor.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from warden.ids import new_id
from warden.outbound.deliver import post_signed
from warden.outbound.egress import EgressRefused
from warden.outbound.secrets import SECRET_ENV
from warden.outbound.secrets import current as current_secret
from warden.policy.monitoring import SinksSpec

log = logging.getLogger("warden.alerts")
COLORS = {"firing": "#d62728", "resolved": "#2ca02c", "no_data": "#7f7f7f", "pending": "#ff7f0e"}


@dataclass(frozen=True)
class Notice:
    point: str
    alert_id: str
    rule: str
    change: str
    severity: str
    metric: str
    op: str
    threshold: float
    value: float | None
    action: str
    message: str
    at: str

    def payload(self) -> dict[str, Any]:
        """Slack reads `text` and `attachments`; other receivers get the same facts in `alert`."""
        title = f"[{self.change.upper()}] {self.point}: {self.rule} ({self.severity})"
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        return {
            "text": f"{title}\n{self.message}",
            "attachments": [
                {
                    "color": COLORS.get(self.change, "#7f7f7f"),
                    "fields": [
                        {"title": "metric", "value": self.metric, "short": True},
                        {"title": "value", "value": shown, "short": True},
                        {
                            "title": "threshold",
                            "value": f"{self.op} {self.threshold:g}",
                            "short": True,
                        },
                        {"title": "action", "value": self.action, "short": True},
                    ],
                }
            ],
            "alert": {
                "id": self.alert_id,
                "point": self.point,
                "rule": self.rule,
                "state": self.change,
                "severity": self.severity,
                "metric": self.metric,
                "op": self.op,
                "threshold": self.threshold,
                "value": self.value,
                "action": self.action,
                "at": self.at,
            },
        }


class Sink(Protocol):
    def send(self, notice: Notice) -> None: ...

    def close(self) -> None: ...


class LogSink:
    def send(self, notice: Notice) -> None:
        level = logging.WARNING if notice.change in ("firing", "no_data") else logging.INFO
        log.log(level, "%s", notice.payload()["text"].replace("\n", " — "))

    def close(self) -> None:
        return None


class WebhookSink:
    def __init__(self, url: str, *, attempts: int = 3, timeout: float = 5.0) -> None:
        self.url = url
        self.attempts = attempts
        self.timeout = timeout
        self.delivered = 0
        self._queue: queue.SimpleQueue[Notice | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="warden-alert-webhook", daemon=True)
        self._thread.start()

    def send(self, notice: Notice) -> None:
        self._queue.put(notice)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=self.timeout * self.attempts + 1)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while (notice := self._queue.get()) is not None:
                self._deliver(client, notice)

    def _deliver(self, client: httpx.Client, notice: Notice) -> None:
        """Signed like review callbacks, to an allowed target only, redirects not followed."""
        secret = current_secret()
        if secret is None:
            log.error("alert webhook not sent: no signing secret (set %s)", SECRET_ENV)
            return
        body = orjson.dumps(notice.payload())
        msg_id = new_id()
        for attempt in range(self.attempts):
            try:
                response = post_signed(client, self.url, body, secret=secret, msg_id=msg_id)
                response.raise_for_status()  # a redirect is an error too: never followed
                self.delivered += 1
                return
            except EgressRefused as exc:
                log.error("alert webhook refused: %s", exc.message)
                return
            except httpx.HTTPError as exc:
                if attempt == self.attempts - 1:
                    log.error("alert webhook failed after %d attempts: %s", self.attempts, exc)
                    return
                time.sleep(0.5 * 2**attempt)


def sinks_for(spec: SinksSpec) -> list[Sink]:
    sinks: list[Sink] = [LogSink()] if spec.log else []
    if spec.webhook is not None:
        url = spec.webhook.url or os.environ.get(spec.webhook.url_env or "", "")
        if url:
            sinks.append(WebhookSink(url))
        else:
            log.error(
                "monitoring.sinks.webhook.url_env names %s, which is not set; alerts are not "
                "posted to the webhook",
                spec.webhook.url_env,
            )
    return sinks
