"""One pooled HTTP client per remote model, and the mapping of every way a call can go wrong to a
ModelFailure code: a late answer is 'model_timeout', an unreachable server or an error status is
'model_error', an answer that is not the expected JSON is 'invalid_output'.
"""

from __future__ import annotations

import os
import re
import ssl
from functools import cache
from typing import Any

import httpx
import orjson

from warden.models.base import (
    INVALID_OUTPUT,
    MODEL_ERROR,
    MODEL_TIMEOUT,
    ModelFailure,
    ModelLoadError,
    describe,
)
from warden.policy.schema import RemoteSpec

DEFAULT_TIMEOUT_MS = 30_000  # without model.timeout_ms a hung server still frees its worker
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RemoteClient:
    """Keep-alive connections to one server, reused by every call (httpx.Client is thread-safe).

    The HTTP timeout equals the point's `timeout_ms`, so a call the guard gave up on also stops
    waiting on the socket and returns its worker soon after.
    """

    def __init__(self, spec: RemoteSpec, timeout_ms: int | None) -> None:
        self.url = spec.url.rstrip("/")
        self._timeout_ms = timeout_ms or DEFAULT_TIMEOUT_MS
        self._client = httpx.Client(
            base_url=self.url,
            headers={"content-type": "application/json", **expand_headers(spec.headers)},
            timeout=httpx.Timeout(self._timeout_ms / 1000),
            limits=httpx.Limits(
                max_connections=spec.max_connections,
                max_keepalive_connections=spec.max_connections,
            ),
            verify=_tls(),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment between Warden and its model
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """The decoded JSON answer to a POST, or ModelFailure saying what went wrong."""
        where = f"{self.url}{path}"
        try:
            response = self._client.post(path, content=orjson.dumps(body))
        except httpx.TimeoutException:
            raise ModelFailure(
                MODEL_TIMEOUT, f"{where} did not answer within {self._timeout_ms:g} ms"
            ) from None
        except httpx.HTTPError as exc:
            raise ModelFailure(
                MODEL_ERROR, f"cannot call {where}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 300:
            raise ModelFailure(
                MODEL_ERROR,
                f"{where} answered HTTP {response.status_code}: "
                f"{describe(response.text.strip(), 200)}",
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ModelFailure(
                INVALID_OUTPUT, f"{where} answered {describe(response.text, 120)}, not JSON"
            ) from None

    def close(self) -> None:
        self._client.close()


@cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for every remote model: building one loads the CA bundle, which
    costs more than a call."""
    return httpx.create_ssl_context()


def expand_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header values with `${NAME}` replaced by environment variables, so a token never has to be
    written into a point file."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ModelLoadError(
                f"model.remote.headers uses ${{{name}}}, but environment variable {name} is not "
                "set; set it where Warden runs"
            )
        return os.environ[name]

    return {key: _ENV.sub(value, text) for key, text in headers.items()}


def malformed(where: str, what: str, answer: object) -> ModelFailure:
    """The failure for an answer that is JSON but not the shape the protocol defines."""
    return ModelFailure(INVALID_OUTPUT, f"{where}: {what} (answer {describe(answer, 160)})")
