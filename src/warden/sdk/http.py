"""The HTTP SDK: the calls of the in-process `Warden`, made against a Warden server.

    with WardenClient("http://127.0.0.1:8000", token) as warden:
        decision = warden.decide("loan_approval", {"amount": 12000, ...})

API errors raise the same WardenError subclasses the engine raises in-process.
"""

from __future__ import annotations

import builtins
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

import warden
from warden.decision import Decision, Route, Status
from warden.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    WardenError,
)
from warden.store.queries import KillSwitch, aware

ERRORS: dict[str, type[WardenError]] = {
    cls.type: cls
    for cls in (
        InvalidInput,
        InvalidRequest,
        NotFound,
        Conflict,
        Unauthenticated,
        Forbidden,
        PayloadTooLarge,
        Unavailable,
    )
}
RETRIES = 3
BACKOFF = 0.1
MAX_WAIT = 30.0  # seconds: the longest pause between two attempts, whatever Retry-After says
LONG_POLL = 30.0


class WardenClient:
    """A synchronous client of the Warden HTTP API; safe to share between threads.

    Pass `client` to reuse an `httpx.Client` you own (tests pass a FastAPI `TestClient`); its
    own timeout applies and `close()` leaves it open. Connection failures and 503s are retried
    up to `retries` times, which is safe for `decide` because every call carries an
    `Idempotency-Key`. Between attempts the client waits at least the server's `Retry-After`
    (else `backoff` doubling per attempt), plus up to half as much again at random, so clients
    turned away together do not all return at the same instant. When the retries are spent a
    503 raises `Unavailable`, whose `retry_after` carries the server's hint.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": f"warden-python/{warden.__version__}",
        }
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout, transport=transport)
        self._retries = retries
        self._backoff = backoff

    # -- decisions -----------------------------------------------------------------------

    def decide(
        self,
        point: str,
        input: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        output: Any = None,
        confidence: Any = None,
        model_version: str | None = None,
        callback_url: str | None = None,
    ) -> Decision:
        """Run one governed decision. In proposal mode pass the AI's `output` and `confidence`.

        Without an `idempotency_key` one is generated, so retries never make a second decision.
        """
        body: dict[str, Any] = {"point": point, "input": dict(input)}
        if context is not None:
            body["context"] = dict(context)
        if output is not None or confidence is not None:
            body.update(output=output, confidence=confidence, model_version=model_version)
        if callback_url is not None:
            body["callback_url"] = callback_url
        key = idempotency_key or str(uuid.uuid4())
        response = self._request(
            "POST",
            "/v1/decisions",
            json=body,
            headers={"Idempotency-Key": key},
            idempotency_key=key,
        )
        return Decision.model_validate_json(response.content)

    def get(self, decision_id: str) -> Decision:
        response = self._request("GET", f"/v1/decisions/{_segment(decision_id)}")
        return Decision.model_validate_json(response.content)

    def wait(self, decision_id: str, timeout: float = 30.0) -> Decision:
        """The decision once final, long-polling the server (at most 30 s per request).

        Raises TimeoutError if it is still pending after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        path = f"/v1/decisions/{_segment(decision_id)}"
        while True:
            left = deadline - time.monotonic()
            wait = max(0.0, min(LONG_POLL, left))
            response = self._request(
                "GET",
                path,
                params={"wait": f"{wait:.3f}"},
                timeout=wait + 10 if self._owns_client else None,  # a lent client keeps its own
            )
            decision = Decision.model_validate_json(response.content)
            if decision.is_final:
                return decision
            if deadline - time.monotonic() <= 0:
                raise TimeoutError(f"decision {decision_id} is still pending after {timeout:g} s")

    def list(
        self,
        point: str | None = None,
        route: Route | str | None = None,
        status: Status | str | None = None,
        limit: int = 50,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Decision]:
        """Every matching decision, newest first, fetched `limit` per page as you iterate.

        Stop early with `itertools.islice` when you only need the first few.
        """
        params: dict[str, str | int] = {"limit": limit}
        for name, value in (("point", point), ("route", route), ("status", status)):
            if value is not None:
                params[name] = str(value)
        for name, moment in (("since", since), ("until", until)):
            if moment is not None:
                params[name] = moment.isoformat()
        while True:
            page = self._request("GET", "/v1/decisions", params=params).json()
            for item in page["data"]:
                yield Decision.model_validate(item)
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]

    def record_outcome(self, decision_id: str, outcome: str) -> Decision:
        """Ground truth for a decision, once known; a second one for the same decision conflicts."""
        response = self._request(
            "POST",
            f"/v1/decisions/{_segment(decision_id)}/outcome",
            json={"outcome": outcome},
            retry_unavailable=False,
        )
        return Decision.model_validate_json(response.content)

    # -- points and kill switches -----------------------------------------------------------

    def points(self) -> builtins.list[dict[str, Any]]:
        """The decision points this token may see, with owner, outcomes, rules and model."""
        result: builtins.list[dict[str, Any]] = self._request("GET", "/v1/points").json()
        return result

    def kill(self, point: str = "*", *, reason: str) -> KillSwitch:
        """Engage the kill switch of a point (or `*`, admin only): nothing is AUTO from now on."""
        return self._toggle(point, "kill", reason)

    def resume(self, point: str = "*", *, reason: str) -> KillSwitch:
        return self._toggle(point, "resume", reason)

    def _toggle(self, point: str, action: str, reason: str) -> KillSwitch:
        path = f"/v1/{action}" if point == "*" else f"/v1/points/{_segment(point)}/{action}"
        data = self._request("POST", path, json={"reason": reason}).json()
        changed = data.get("changed_at")
        return KillSwitch(
            data["scope"],
            data["engaged"],
            data["actor"],
            data["reason"],
            aware(datetime.fromisoformat(changed)) if changed else None,
        )

    # -- transport -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_unavailable: bool = True,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One API call, retried only where a retry cannot apply anything twice."""
        url = self.base_url + path
        all_headers = {**self._headers, **(headers or {})}
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            refused: httpx.Response | None = None  # a 503 to take Retry-After from
            try:
                # No timeout given: the client's own applies. The argument is left out rather
                # than passed as httpx's sentinel, which a lent client of another httpx
                # generation (Starlette's TestClient on httpx2) refuses.
                if timeout is None:
                    response = self._client.request(
                        method, url, json=json, params=params, headers=all_headers
                    )
                else:
                    response = self._client.request(
                        method, url, json=json, params=params, headers=all_headers, timeout=timeout
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise Unavailable(
                        f"cannot connect to Warden at {self.base_url} "
                        f"({exc}); is the server running?"
                    ) from exc
            except httpx.TransportError as exc:
                raise _no_answer(self.base_url, exc, idempotency_key) from exc
            else:
                if response.status_code != 503 or not retry_unavailable or last:
                    break
                refused = response
            time.sleep(self._pause(attempt, refused))
        if response.is_error:
            raise error_from_response(response)
        return response

    def _pause(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before the next attempt: at least Retry-After, jittered upwards."""
        base = self._backoff * 2.0**attempt
        hint = _retry_after(response) if response is not None else None
        if hint is not None:
            base = max(base, hint)
        base = min(base, MAX_WAIT)
        return base + random.uniform(0, base / 2)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> WardenClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def error_from_response(response: httpx.Response) -> WardenError:
    """The WardenError for an error response, keeping `field` and extras like `decision_id`."""
    try:
        body = response.json()["error"]
        kind, message = str(body.pop("type")), str(body.pop("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:200] or response.reason_phrase
        cls = Unavailable if response.status_code == 503 else WardenError
        error = cls(f"HTTP {response.status_code} from {response.url}: {text}")
        error.http_status = response.status_code
        return error
    field = body.pop("field", None)
    error = ERRORS.get(kind, WardenError)(message, field=field, **body)
    hint = _retry_after(response)
    if isinstance(error, Unavailable) and hint is not None:
        error.retry_after = hint
    if kind not in ERRORS:
        error.type = kind
    error.http_status = response.status_code
    return error


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the delay form; an HTTP date is not used here)."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def _no_answer(base_url: str, exc: httpx.TransportError, key: str | None) -> Unavailable:
    """The request may have reached the server; only an idempotent retry is safe."""
    retry = (
        f"; retry with idempotency_key='{key}' to get the same decision"
        if key
        else "; check whether it took effect before retrying"
    )
    extra: dict[str, Any] = {"idempotency_key": key} if key else {}
    return Unavailable(
        f"no answer from Warden at {base_url} ({type(exc).__name__}: {exc}){retry}", **extra
    )


def _segment(value: str) -> str:
    return quote(value, safe="")
