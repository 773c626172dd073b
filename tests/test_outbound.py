"""What leaves the server: webhook targets, their signatures, and the secret behind them.

Attacks first: a caller token naming an internal URL as its callback, a public name that
resolves inside, a receiver that redirects inside. Then both signature schemes, checked with
the official verifiers (`standardwebhooks`, `stripe`), and the secret at rest.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.reviewing import LOAN_WITH_REVIEW, REVIEW_INPUT, Clock, review_points, reviewer, token
from warden.api.app import create_app
from warden.engine import Engine
from warden.outbound import secrets as stored
from warden.outbound.deliver import post_signed
from warden.outbound.egress import AllowList, EgressRefused, check_url, internal, resolve
from warden.outbound.signing import headers as signature_headers
from warden.outbound.signing import new_secret
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.review.notify import WebhookSender, deliveries
from warden.store.schema import server_secrets, webhook_deliveries


class Receiver:
    """A local HTTP server; `redirect_to` makes it answer 302 to that URL."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/internal/admin"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "ob")), db, actor="test")
    yield eng
    eng.close()


# -- where webhooks may go -----------------------------------------------------------------


def test_a_caller_cannot_make_the_server_post_inside(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDEN_WEBHOOK_ALLOW", raising=False)
    caller, _ = token(engine, ["caller"], name="carl")
    with TestClient(create_app(engine, workers=[])) as client:
        for url in (
            receiver.url,
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:8080/x",
            "http://[::1]/x",
            "http://10.0.0.7/x",
            "http://[::ffff:127.0.0.1]/x",
        ):
            response = client.post(
                "/v1/decisions",
                json={"point": "loan_approval", "input": REVIEW_INPUT, "callback_url": url},
                headers=caller,
            )
            assert response.status_code == 400, (url, response.text)
            assert "WARDEN_WEBHOOK_ALLOW" in response.json()["error"]["message"]
    with engine.db.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)).scalar() == 0
        )
    assert receiver.received == []


def _settled_with_callback(engine: Engine, url: str | None = None) -> str:
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller", callback_url=url)
    desk = ReviewDesk(engine, clock=Clock())
    _, alice = reviewer(engine)
    desk.claim(alice, decision.id)
    desk.approve(alice, decision.id)
    return decision.id


def test_a_policy_callback_to_an_internal_address_is_dead_at_once(
    tmp_path: Path, db: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point files are checked when the webhook is sent: the policy cannot reach inside."""
    monkeypatch.delenv("WARDEN_WEBHOOK_ALLOW", raising=False)
    text = LOAN_WITH_REVIEW.replace(
        "  lease: 15m\n", f"  lease: 15m\n  callback_url: {receiver.url}\n"
    )
    engine = Engine(load_points(review_points(tmp_path / "pol", text)), db, actor="test")
    try:
        decision_id = _settled_with_callback(engine)
        sender = WebhookSender(engine.db, secret=new_secret())
        assert sender.run_once() == 1
        assert sender.run_once() == 0  # never retried
        sender.stop()
        with engine.db.connect() as conn:
            (record,) = deliveries(conn, decision_id=decision_id)
    finally:
        engine.close()
    assert record["status"] == "dead" and "internal address" in record["last_error"]
    assert receiver.received == []


def test_a_public_name_that_resolves_inside_is_refused_when_sending() -> None:
    allow = AllowList.parse(None)
    check_url("https://hooks.example.com/x", allow=allow)  # accepted: a public-looking name
    with pytest.raises(EgressRefused, match="internal address"):
        resolve(
            "https://hooks.example.com/x",
            allow=allow,
            resolver=lambda h, p: ["93.184.216.34", "10.1.2.3"],
        )
    pinned = resolve(
        "https://hooks.example.com:8443/x?a=1", allow=allow, resolver=lambda h, p: ["93.184.216.34"]
    )
    assert pinned.url == "https://93.184.216.34:8443/x?a=1" and pinned.host == "hooks.example.com"


def test_redirects_are_not_followed(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    inside = Receiver()
    outside = Receiver(redirect_to=inside.url)
    try:
        monkeypatch.setenv("WARDEN_WEBHOOK_ALLOW", "127.0.0.1")
        decision_id = _settled_with_callback(
            engine, outside.url.replace("/internal/admin", "/hook")
        )
        sender = WebhookSender(engine.db, secret=new_secret())
        sender.run_once()
        sender.stop()
        with engine.db.connect() as conn:
            (record,) = deliveries(conn, decision_id=decision_id)
    finally:
        inside.close()
        outside.close()
    assert len(outside.received) == 1 and inside.received == []
    assert record["status"] == "pending" and "redirects are not followed" in record["last_error"]


def test_the_allow_list_admits_only_its_hosts_domains_and_networks() -> None:
    allow = AllowList.parse("hooks.example.com, .corp.example, 10.20.0.0/16, 127.0.0.1")
    check_url("https://hooks.example.com/x", allow=allow)
    check_url("https://a.b.corp.example/x", allow=allow)
    check_url("http://10.20.3.4/x", allow=allow)
    check_url("http://127.0.0.1:9/x", allow=allow)
    public = lambda h, p: ["93.184.216.34"]  # noqa: E731
    for bad in ("https://evil.example.com/x", "https://corp.example.evil/x", "http://10.21.0.1/x"):
        with pytest.raises(EgressRefused, match=r"not in WARDEN_WEBHOOK_ALLOW|internal"):
            resolve(bad, allow=allow, resolver=public)
    with pytest.raises(EgressRefused, match="not in WARDEN_WEBHOOK_ALLOW"):
        check_url("https://evil.example.com/x", allow=AllowList.parse("hooks.example.com"))
    with pytest.raises(EgressRefused, match=r"http:// or https://"):
        check_url("file:///etc/passwd", allow=allow)
    with pytest.raises(EgressRefused, match="user name"):
        check_url("https://user:pw@hooks.example.com/x", allow=allow)
    with pytest.raises(EgressRefused, match="internal"):  # named, but resolves inside, not allowed
        resolve("https://a.corp.example/x", allow=allow, resolver=lambda h, p: ["192.168.1.1"])


_INSIDE = st.one_of(
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="172.16.0.0/12"),
    st.ip_addresses(network="192.168.0.0/16"),
    st.ip_addresses(network="169.254.0.0/16"),
    st.ip_addresses(network="fe80::/10"),
    st.ip_addresses(network="fc00::/7"),
    st.just(ipaddress.ip_address("::1")),
)


@settings(max_examples=80, deadline=None)
@given(address=_INSIDE)
def test_every_internal_address_is_refused_unless_its_network_is_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert internal(address)
    with pytest.raises(EgressRefused):
        check_url(f"http://{host}/x", allow=AllowList.parse(None))
    with pytest.raises(EgressRefused):
        resolve(
            "https://hooks.example.com/",
            allow=AllowList.parse(None),
            resolver=lambda h, p: [str(address)],
        )
    network = ipaddress.ip_network(f"{address}/{address.max_prefixlen}")
    check_url(f"http://{host}/x", allow=AllowList.parse(str(network)))


# -- signatures ----------------------------------------------------------------------------


def test_both_signatures_verify_with_the_official_libraries(receiver: Receiver) -> None:
    secret = new_secret()
    body = b'{"type":"decision.final","decision":{"id":"d1"}}'
    with httpx.Client() as client:
        response = post_signed(
            client,
            receiver.url,
            body,
            secret=secret,
            msg_id="msg_1",
            allow=AllowList.parse("127.0.0.1"),
        )
    assert response.status_code == 200
    ((headers, got),) = receiver.received
    assert got == body
    assert Webhook(secret).verify(got, headers) == {
        "type": "decision.final",
        "decision": {"id": "d1"},
    }
    stripe.WebhookSignature.verify_header(got.decode(), headers["Warden-Signature"], secret, 300)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got, headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            got.decode().replace("d1", "d2"), headers["Warden-Signature"], secret, 300
        )


def test_older_secrets_still_verify_with_both_schemes() -> None:
    """Secrets generated before (`whsec_` + URL-safe text) sign as the verifiers read them."""
    secret = "whsec_" + "A-b_c" * 8
    body = b"{}"
    headers = signature_headers(secret, "m1", body)
    Webhook(secret).verify(body, headers)
    stripe.WebhookSignature.verify_header(body.decode(), headers["Warden-Signature"], secret, 300)


# -- the secret at rest ----------------------------------------------------------------------


def test_the_stored_secret_is_encrypted_and_needs_the_key(
    db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDEN_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("WARDEN_SECRETS_KEY", raising=False)
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home-a"))
    secret = stored.webhook_secret(db)
    assert stored.webhook_secret(db) == secret
    with db.connect() as conn:
        at_rest = conn.execute(sa.select(server_secrets.c.value)).scalar_one()
    assert at_rest.startswith("fernet:") and secret not in at_rest
    assert (tmp_path / "home-a" / "secrets.key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home-b"))  # another key
    with pytest.raises(stored.SecretUnavailable, match="WARDEN_SECRETS_KEY"):
        stored.webhook_secret(db)


def test_a_plain_secret_from_before_is_encrypted_on_first_read(
    db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.delenv("WARDEN_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WARDEN_SECRETS_KEY", Fernet.generate_key().decode())
    with db.begin() as conn:
        conn.execute(
            server_secrets.insert().values(
                name="webhook", value="whsec_old", created_at=sa.func.now()
            )
        )
    assert stored.webhook_secret(db) == "whsec_old"
    with db.connect() as conn:
        assert conn.execute(sa.select(server_secrets.c.value)).scalar_one().startswith("fernet:")
    assert stored.webhook_secret(db) == "whsec_old"
