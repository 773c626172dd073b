"""One outbound POST: target checked and pinned, every signature attached, no redirects."""

from __future__ import annotations

import httpx

from warden.outbound import signing
from warden.outbound.egress import AllowList, Resolver, resolve, system_resolver


def post_signed(
    client: httpx.Client,
    url: str,
    body: bytes,
    *,
    secret: str,
    msg_id: str,
    extra_headers: dict[str, str] | None = None,
    allow: AllowList | None = None,
    resolver: Resolver = system_resolver,
) -> httpx.Response:
    """POST `body` to `url` after checking where it resolves; raises `EgressRefused` for a
    target the policy refuses. A 3xx answer is returned as is (never followed)."""
    target = resolve(url, allow=allow, resolver=resolver)
    headers = {
        "Content-Type": "application/json",
        "Host": _host_header(url),
        **signing.headers(secret, msg_id, body),
        **(extra_headers or {}),
    }
    return client.post(
        target.url,
        content=body,
        headers=headers,
        follow_redirects=False,
        extensions={"sni_hostname": target.host},
    )


def _host_header(url: str) -> str:
    return httpx.URL(url).netloc.decode()
