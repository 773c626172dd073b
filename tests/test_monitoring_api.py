"""Monitoring through HTTP: /metrics, point health, alerts, and a `tighten` that really routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring import applications, monitored_points
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.monitor.observer import attach
from warden.monitor.worker import Monitor
from warden.policy.loader import load_points

LOW_CARDINALITY = {
    "point",
    "route",
    "model_version",
    "code",
    "column",
    "metric",
    "state",
    "severity",
    "reason",  # why a write was refused: one of a few fixed words (queue_full, unavailable...)
    # tool calls of agents: gateway, upstream server and tool names come from the gateway's
    # configuration (or the decorated function's name), never from a caller; status is one of
    # a few fixed words
    "gateway",
    "server",
    "tool",
    "status",
    "part",
    "phase",  # the writer's loop: idle, gather, prepare, database, answer
    "clock",  # wall or cpu
}


@pytest.fixture
def monitored(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    engine = Engine(load_points(monitored_points(tmp_path / "points")), db, actor="test")
    attach(engine)
    yield engine
    engine.close()


@pytest.fixture
def client(monitored: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(monitored, workers=[])) as test_client:
        yield test_client


def _token(engine: Engine, roles: list[str]) -> dict[str, str]:
    secret, _ = create_token(
        engine.recorder, name="t", roles=roles, points=["loan_approval"], actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


def _post(
    client: TestClient, headers: dict[str, str], inputs: list[dict[str, object]]
) -> list[str]:
    routes = []
    for item in inputs:
        response = client.post(
            "/v1/decisions", json={"point": "loan_approval", "input": item}, headers=headers
        )
        assert response.status_code in (200, 202), response.text
        routes.append(response.json()["route"])
    return routes


def test_tighten_routes_the_next_decision_to_review_over_http(
    client: TestClient, monitored: Engine
) -> None:
    caller = _token(monitored, ["caller"])
    owner = _token(monitored, ["owner"])
    rng = np.random.default_rng(11)
    monitor = Monitor(monitored)
    _post(client, caller, applications(rng, 200))
    monitor.poll()
    safe = {"amount": 1000, "income": 5000, "credit_score": 845}
    assert _post(client, caller, [safe]) == ["auto"]

    _post(client, caller, applications(rng, 199, shifted=True))
    monitor.poll()
    health = client.get("/v1/points/loan_approval/health", headers=owner).json()
    assert health["status"] == "critical"
    assert [t["rule"] for t in health["tightened"]] == ["input_drift"]
    assert health["latest"]["drift"]["share"] >= 0.5
    response = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": safe}, headers=caller
    )
    assert response.status_code == 202
    assert response.json()["reasons"][0]["code"] == "alert_tighten"

    firing = client.get("/v1/alerts?state=firing", headers=owner).json()["data"]
    (alert,) = [a for a in firing if a["rule"] == "input_drift"]
    assert alert["action"] == "tighten" and alert["value"] >= 0.5
    denied = client.post(f"/v1/alerts/{alert['id']}/resolve", json={"reason": "x"}, headers=caller)
    assert denied.status_code == 403
    resolved = client.post(
        f"/v1/alerts/{alert['id']}/resolve", json={"reason": "upstream fixed"}, headers=owner
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["state"] == "resolved"
    assert _post(client, caller, [safe]) == ["auto"]
    missing = client.get("/v1/alerts/nope", headers=owner)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_metrics_parse_with_named_metrics_and_low_cardinality_labels(
    client: TestClient, monitored: Engine
) -> None:
    caller = _token(monitored, ["caller"])
    _post(client, caller, applications(np.random.default_rng(3), 200))
    _post(client, caller, [{"amount": 90000, "income": 1, "credit_score": 700}])
    _post(client, caller, [{"amount": 1, "income": 1, "credit_score": 700, "mode": "error"}])
    Monitor(monitored).poll()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "warden_decisions",
        "warden_decision_duration_seconds",
        "warden_model_errors",
        "warden_breaker_state",
        "warden_review_queue_depth",
        "warden_review_age_seconds",
        "warden_drift_score",
        "warden_drift_share",
        "warden_monitor_value",
    ):
        assert name in families, name
    decided = {
        (s.labels["route"], s.labels["model_version"])
        for s in families["warden_decisions"].samples
        if s.labels.get("point") == "loan_approval" and s.name == "warden_decisions_total"
    }
    assert ("auto", "7") in decided and ("review", "7") in decided
    depth = [
        s.value
        for s in families["warden_review_queue_depth"].samples
        if s.labels["point"] == "loan_approval"
    ]
    assert depth and depth[0] >= 2
    for family in families.values():
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= LOW_CARDINALITY, (sample.name, sample.labels)
            for value in sample.labels.values():
                assert len(value) < 80  # no decision ids, no inputs


def test_health_of_an_unmonitored_point_and_auth(client: TestClient, monitored: Engine) -> None:
    owner = _token(monitored, ["owner"])
    assert client.get("/v1/points/loan_approval/health").status_code == 401
    health = client.get("/v1/points/loan_approval/health", headers=owner).json()
    assert health["status"] == "no_data" and health["monitored"] is True
    assert client.get("/v1/points/nope/health", headers=owner).status_code == 404


def _console_login(client: TestClient, engine: Engine) -> None:
    secret, _ = create_token(
        engine.recorder, name="owner", roles=["owner"], points=["loan_approval"], actor="test"
    )
    client.get("/console/login")
    csrf = client.cookies.get("warden_login_csrf")
    response = client.post(
        "/console/login",
        data={"csrf": csrf, "token": secret, "next": "/console/health"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def test_console_health_pages_show_charts_alerts_and_protection(
    client: TestClient, monitored: Engine
) -> None:
    caller = _token(monitored, ["caller"])
    rng = np.random.default_rng(12)
    monitor = Monitor(monitored)
    _post(client, caller, applications(rng, 200))
    monitor.poll()
    _post(client, caller, applications(rng, 200, shifted=True))
    monitor.poll()
    _console_login(client, monitored)
    index = client.get("/console/health")
    assert index.status_code == 200 and "loan_approval" in index.text and "critical" in index.text
    page = client.get("/console/points/loan_approval/health")
    assert page.status_code == 200
    html = page.text
    assert html.count("<svg") == 5
    assert "Tightened" in html and "input_drift" in html and "credit_score" in html
    assert "https://" not in html and "http://cdn" not in html
    assert client.get("/console/points/nope/health").status_code == 404


def test_an_owner_resolves_an_alert_from_the_health_page(
    client: TestClient, monitored: Engine
) -> None:
    import re

    caller = _token(monitored, ["caller"])
    rng = np.random.default_rng(12)
    monitor = Monitor(monitored)
    _post(client, caller, applications(rng, 200))
    monitor.poll()
    _post(client, caller, applications(rng, 200, shifted=True))
    monitor.poll()
    assert "loan_approval" in monitored.tightened
    _console_login(client, monitored)
    html = client.get("/console/points/loan_approval/health").text
    assert "Holm correction" in html  # why p < 0.05 can read "not drifted"
    form = re.search(
        r'action="/console/alerts/([^/"]+)/resolve" class="inline" '
        r'aria-label="Resolve alert input_drift"',
        html,
    )
    assert form is not None and "and lift the tightening" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    url = f"/console/alerts/{form.group(1)}/resolve"
    refused = client.post(url, data={"csrf": csrf.group(1), "reason": " "}, follow_redirects=False)
    assert refused.status_code == 400 and "loan_approval" in monitored.tightened
    done = client.post(
        url, data={"csrf": csrf.group(1), "reason": "checked the drift"}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/points/loan_approval/health?done=resolved"
    assert "loan_approval" not in monitored.tightened
    after = client.get(done.headers["location"]).text
    assert "the alert was resolved" in after and "Tightened" not in after


def test_only_an_owner_may_resolve_from_the_console(client: TestClient, monitored: Engine) -> None:
    secret, _ = create_token(
        monitored.recorder, name="aud", roles=["auditor"], points=["loan_approval"], actor="test"
    )
    client.get("/console/login")
    csrf = client.cookies.get("warden_login_csrf")
    client.post("/console/login", data={"csrf": csrf, "token": secret}, follow_redirects=False)
    page = client.get("/console/points/loan_approval/health").text
    assert "/resolve" not in page.split("Open alerts")[1].split("</section>")[0] or (
        "An owner of the point resolves alerts" in page
    )
    import re

    session_csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert session_csrf is not None
    response = client.post(
        "/console/alerts/no-such-alert/resolve",
        data={"csrf": session_csrf.group(1), "reason": "x"},
        follow_redirects=False,
    )
    assert response.status_code == 404
