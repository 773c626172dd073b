"""`warden monitor` and `warden report` through Typer's runner against a real database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.monitoring import applications, monitored_points
from warden.cli.app import app
from warden.cli.context import open_engine, settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    points = monitored_points(tmp_path / "points")
    monkeypatch.setenv("WARDEN_CONFIG", str(points))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    return points


def _traffic(normal: int, shifted: int) -> None:
    engine = open_engine(settings())
    rng = np.random.default_rng(4)
    try:
        for item in applications(rng, normal) + applications(rng, shifted, shifted=True):
            engine.decide("loan_approval", item)
    finally:
        engine.close()


def test_run_status_resolve_and_report(env: Path, tmp_path: Path) -> None:
    _traffic(200, 200)
    ran = runner.invoke(app, ["monitor", "run", "--once"])
    assert ran.exit_code == 0, ran.output
    assert "2 windows closed" in ran.output

    status = runner.invoke(app, ["monitor", "status"])
    assert status.exit_code == 0, status.output
    assert "critical" in status.output and "tightened by input_drift" in status.output

    health = json.loads(runner.invoke(app, ["monitor", "status", "--json"]).stdout)
    (alert,) = [a for a in health[0]["alerts"] if a["rule"] == "input_drift"]

    decided = runner.invoke(
        app,
        ["decide", "loan_approval", "--input", '{"amount": 1, "income": 1, "credit_score": 845}'],
    )
    assert json.loads(decided.stdout)["route"] == "review"  # tighten holds from the CLI too

    report = tmp_path / "report.html"
    made = runner.invoke(app, ["report", "loan_approval", "--since", "1d", "--out", str(report)])
    assert made.exit_code == 0, made.output
    html = report.read_text()
    assert "credit-risk@example.com" in html and "input_drift" in html and "<svg" in html
    assert "protection.engaged" in html
    # offline: nothing is fetched (the SVG namespace is an identifier, not a request)
    fetched = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(|@import""", html)
    assert fetched == [] and "<script" not in html and "<link" not in html

    resolved = runner.invoke(app, ["monitor", "resolve", alert["id"], "--reason", "checked"])
    assert resolved.exit_code == 0, resolved.output
    assert "resolved" in resolved.output
    missing = runner.invoke(app, ["monitor", "resolve", "nope", "--reason", "x"])
    assert missing.exit_code == 1 and "no alert with id" in missing.output


def test_export_rules_is_prometheus_yaml(env: Path, tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    result = runner.invoke(app, ["monitor", "export-rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    groups = yaml.safe_load(out.read_text())["groups"]
    rules = {r["alert"]: r for r in groups[0]["rules"]}
    drift = rules["warden_loan_approval_input_drift"]
    assert drift["expr"] == 'warden_drift_share{point="loan_approval"} >= 0.5'
    assert drift["labels"]["severity"] == "critical" and drift["for"] == "0s"
    surge = rules["warden_loan_approval_review_surge"]
    assert (
        surge["expr"] == 'warden_monitor_value{point="loan_approval",metric="review_rate"} > 0.95'
    )
    assert surge["for"] == "600s"
    assert "warden_loan_approval_no_data" in rules


def test_report_rejects_a_bad_period_and_unknown_point(env: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["report", "loan_approval", "--since", "last week"])
    assert bad.exit_code == 2 and "--since" in bad.output
    unknown = runner.invoke(app, ["report", "nope", "--out", str(tmp_path / "x.html")])
    assert unknown.exit_code == 1 and "no decision point 'nope'" in unknown.output
