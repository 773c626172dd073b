"""The background monitor against a real database: windows, drift, alerts and protective actions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.ledger_helpers import assert_state_agrees
from tests.monitoring import MONITORING, applications, monitored_points
from warden.decision import Route
from warden.engine import Engine
from warden.monitor.observer import attach
from warden.monitor.worker import Monitor, resolve_alert
from warden.policy.loader import load_points
from warden.store.schema import events, monitor_alerts, monitor_references, monitor_windows


class Clock:
    """Wall time that only moves when a test moves it (decisions carry real timestamps)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitored(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    engine = Engine(load_points(monitored_points(tmp_path / "points")), db, actor="test")
    attach(engine)
    yield engine
    engine.close()


def _decide(engine: Engine, inputs: list[dict[str, object]]) -> list[Route]:
    return [engine.decide("loan_approval", item).route for item in inputs]


def _event_types(engine: Engine) -> list[str]:
    with engine.db.connect() as conn:
        return list(conn.execute(sa.select(events.c.type).order_by(events.c.seq)).scalars())


def test_drift_fires_tighten_and_a_person_lifts_it(monitored: Engine) -> None:
    rng = np.random.default_rng(5)
    clock = Clock()
    monitor = Monitor(monitored, clock=clock)
    _decide(monitored, applications(rng, 200))
    monitor.poll()
    with monitored.db.connect() as conn:
        first = conn.execute(sa.select(monitor_windows)).one()
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(monitor_references)).scalar() == 1
        )
    assert first.decisions == 200 and first.metrics["drift_share"] == 0.0
    assert {c["column"] for c in first.drift["columns"]} == {"amount", "income", "credit_score"}
    assert not monitored.tightened

    _decide(monitored, applications(rng, 200, shifted=True))
    clock.now += 5
    monitor.poll()
    assert "loan_approval" in monitored.tightened
    types = _event_types(monitored)
    assert "monitor.reference_built" in types and types.count("monitor.window_closed") == 2
    firing = types.index("alert.firing")
    assert types[firing + 1] == "protection.engaged"

    safe = {"amount": 1000, "income": 5000, "credit_score": 845}
    decision = monitored.decide("loan_approval", safe)
    assert decision.route is Route.REVIEW
    assert decision.reasons[0].code == "alert_tighten"
    assert "input_drift" in decision.reasons[0].message

    with monitored.db.connect() as conn:
        alert = conn.execute(
            sa.select(monitor_alerts).where(monitor_alerts.c.rule == "input_drift")
        ).one()
    assert alert.state == "firing" and alert.action == "tighten"
    resolved = resolve_alert(monitored, alert.id, actor="cli:alice", reason="checked the source")
    assert resolved["state"] == "resolved" and resolved["resolved_by"] == "cli:alice"
    assert not monitored.tightened
    assert monitored.decide("loan_approval", safe).route is Route.AUTO
    assert _event_types(monitored)[-3:-1] == ["alert.resolved", "protection.released"]

    monitor.poll()  # the window the person looked at does not overrule them
    assert not monitored.tightened
    _decide(monitored, applications(rng, 200, shifted=True))
    monitor.poll()  # new evidence: a new episode
    assert "loan_approval" in monitored.tightened
    assert_state_agrees(monitored.db)  # alerts and protections follow from their events


def test_kill_action_engages_the_kill_switch(tmp_path: Path, db: sa.Engine) -> None:
    killing = MONITORING.replace("action: tighten", "action: kill")
    engine = Engine(load_points(monitored_points(tmp_path / "points", killing)), db, actor="test")
    try:
        rng = np.random.default_rng(9)
        monitor = Monitor(engine, clock=Clock())
        _decide(engine, applications(rng, 200, shifted=True))
        monitor.poll()
        assert "kill_switch.engaged" in _event_types(engine)
        (switch,) = [k for k in engine.kill_switches() if k.engaged]
        assert switch.scope == "loan_approval" and switch.actor == "monitor:alert:input_drift"
        decision = engine.decide("loan_approval", {"amount": 1, "income": 1, "credit_score": 845})
        assert decision.route is Route.REVIEW and decision.reasons[0].kind == "kill"
    finally:
        engine.close()


def test_time_windows_and_no_data(tmp_path: Path, db: sa.Engine) -> None:
    monitoring = """
monitoring:
  window: {count: 1000, every: 60s}
  alerts:
    - {id: errors, metric: error_rate, op: ">", threshold: 0.2, for: 0s}
"""
    engine = Engine(
        load_points(monitored_points(tmp_path / "points", monitoring)), db, actor="test"
    )
    try:
        clock = Clock()
        monitor = Monitor(engine, clock=clock)
        ok = {"amount": 1, "income": 1, "credit_score": 700}
        failing = {**ok, "mode": "error"}
        _decide(engine, [ok, ok, failing] * 3 + [ok])  # 30% errors; the breaker stays closed
        monitor.poll()
        clock.now += 61
        monitor.poll()
        with engine.db.connect() as conn:
            window = conn.execute(sa.select(monitor_windows)).one()
            alert = conn.execute(sa.select(monitor_alerts)).one()
        assert window.decisions == 10 and window.metrics["error_rate"] == pytest.approx(0.3)
        assert window.drift["columns"] == []  # no reference: rates and alerts only
        assert alert.state == "firing" and alert.value == pytest.approx(0.3)
        clock.now += 61  # an empty window: no error rate to judge
        monitor.poll()
        clock.now += 61
        monitor.poll()
        with engine.db.connect() as conn:
            states = [
                r.state
                for r in conn.execute(sa.select(monitor_alerts).order_by(monitor_alerts.c.id))
            ]
        assert states == ["firing"]  # silence does not resolve a firing alert
    finally:
        engine.close()


def test_first_n_reference_and_ground_truth(tmp_path: Path, db: sa.Engine) -> None:
    monitoring = """
monitoring:
  reference: {first_n: 100}
  window: {count: 100, min_count: 20}
  alerts:
    - {id: accuracy_drop, metric: accuracy, op: "<", threshold: 0.6, no_data: ok}
"""
    engine = Engine(
        load_points(monitored_points(tmp_path / "points", monitoring)), db, actor="test"
    )
    try:
        rng = np.random.default_rng(2)
        monitor = Monitor(engine, clock=Clock())
        decided = [engine.decide("loan_approval", x) for x in applications(rng, 100)]
        monitor.poll()
        for decision in decided[:40]:  # ground truth arrives in the second window
            wrong = "decline" if decision.proposed_outcome == "approve" else "approve"
            engine.record_ground_truth(decision.id, wrong, actor="test")
        _decide(engine, applications(rng, 100))
        monitor.poll()
        with engine.db.connect() as conn:
            windows = conn.execute(sa.select(monitor_windows).order_by(monitor_windows.c.seq)).all()
            alert = conn.execute(sa.select(monitor_alerts)).one()
        assert len(windows) == 2
        tested = {c["column"] for c in windows[1].drift["columns"]}
        assert tested == {
            "amount",
            "income",
            "credit_score",
            "country",
            "mode",
            "output",
            "confidence",
        }
        assert windows[1].metrics["accuracy"] == 0.0
        assert windows[1].details["by_model"]["7"]["outcomes"] == 40
        assert alert.rule == "accuracy_drop" and alert.state == "firing"
    finally:
        engine.close()


def test_one_leader_per_database(monitored: Engine) -> None:
    clock = Clock()
    first = Monitor(monitored, clock=clock, holder="a")
    second = Monitor(monitored, clock=clock, holder="b")
    first.poll()
    second.poll()
    assert first.leading and not second.leading
    clock.now += 60  # the first stops renewing; its lease expires
    second.poll()
    assert second.leading


def test_a_new_leader_resumes_after_the_last_closed_window(monitored: Engine) -> None:
    rng = np.random.default_rng(8)
    first = Monitor(monitored, holder="a")
    _decide(monitored, applications(rng, 300))  # one full window and half of the next
    first.poll()
    first.stop()  # releases the lease
    _decide(monitored, applications(rng, 100))
    second = Monitor(monitored, holder="b")
    second.poll()
    with monitored.db.connect() as conn:
        rows = conn.execute(sa.select(monitor_windows).order_by(monitor_windows.c.seq)).all()
    assert [(r.seq, r.decisions) for r in rows] == [(1, 200), (2, 200)]
    assert rows[1].first_event > rows[0].last_event


def test_webhook_sink_posts_slack_compatible_json(
    tmp_path: Path, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from standardwebhooks import Webhook

    from warden.outbound.signing import new_secret, verify

    secret = new_secret()
    monkeypatch.setenv("WARDEN_WEBHOOK_SECRET", secret)
    monkeypatch.setenv("WARDEN_WEBHOOK_ALLOW", "127.0.0.1")
    received: list[dict[str, object]] = []
    signed: list[bool] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            headers = dict(self.headers)
            Webhook(secret).verify(body, headers)  # raises unless signed (Standard Webhooks)
            signed.append(verify(secret, body, headers["Warden-Signature"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    monitoring = MONITORING + f"  sinks: {{log: false, webhook: {{url: '{url}'}}}}\n"
    engine = Engine(
        load_points(monitored_points(tmp_path / "points", monitoring)), db, actor="test"
    )
    monitor = Monitor(engine)
    try:
        _decide(engine, applications(np.random.default_rng(3), 200, shifted=True))
        monitor.poll()
    finally:
        monitor.stop()  # waits for the webhook thread to deliver
        engine.close()
        server.shutdown()
    assert signed and all(signed)
    (notice,) = [r for r in received if r["alert"]["rule"] == "input_drift"]  # type: ignore[index]
    assert str(notice["text"]).startswith("[FIRING] loan_approval: input_drift (critical)")
    assert notice["attachments"][0]["fields"][0] == {  # type: ignore[index]
        "title": "metric",
        "value": "drift_share",
        "short": True,
    }
    assert notice["alert"]["action"] == "tighten"  # type: ignore[index]
