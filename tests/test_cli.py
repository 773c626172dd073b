"""The `warden` command line, run through Typer's runner against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import LOAN_POINT
from warden.cli.app import app
from warden.ledger.keys import key_path

GOOD = '{"amount": 1000, "income": 5000, "credit_score": 800}'


@pytest.fixture
def env(points_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_HOME", str(points_dir.parent / "home"))
    return points_dir


runner = CliRunner()


def test_init(env: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert "database ready" in result.output


def test_policy_check_ok_and_errors(env: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["policy", "check"])
    assert ok.exit_code == 0, ok.output
    assert "loan_approval" in ok.output and "refund_agent" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(LOAN_POINT.replace("confidence >= 0.85", "confidense >= 0.85"))
    result = runner.invoke(app, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    line = next(n for n, t in enumerate(bad.read_text().splitlines(), 1) if "confidense" in t)
    assert f"{bad}:{line}: " in result.output.replace("\n", "")
    assert "unknown variable" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["policy", "check", str(empty)]).exit_code == 1


def test_decide_prints_one_json_object(env: Path) -> None:
    result = runner.invoke(app, ["decide", "loan_approval", "--input", GOOD])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    for key in (
        "id",
        "point",
        "route",
        "outcome",
        "confidence",
        "status",
        "reasons",
        "policy_version",
        "model_version",
    ):
        assert key in decision
    assert decision["route"] == "auto"


def test_decide_from_file_and_proposal(env: Path, tmp_path: Path) -> None:
    payload = tmp_path / "in.json"
    payload.write_text('{"order_id": "o1", "amount": 10}')
    result = runner.invoke(
        app,
        [
            "decide",
            "refund_agent",
            "--input",
            f"@{payload}",
            "--output",
            "refund",
            "--confidence",
            "0.95",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outcome"] == "refund"


def test_decide_bad_input_exits_1_with_the_error_shape(env: Path) -> None:
    result = runner.invoke(app, ["decide", "loan_approval", "--input", '{"amount": -1}'])
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["type"] == "invalid_input" and error["decision_id"]
    garbage = runner.invoke(app, ["decide", "loan_approval", "--input", "{nope"])
    assert garbage.exit_code == 2 and "not valid JSON" in garbage.output


def test_kill_and_resume(env: Path) -> None:
    killed = runner.invoke(app, ["kill", "loan_approval", "--reason", "incident 42"])
    assert killed.exit_code == 0, killed.output
    decided = runner.invoke(app, ["decide", "loan_approval", "--input", GOOD])
    assert json.loads(decided.stdout)["route"] == "review"
    resumed = runner.invoke(app, ["resume", "loan_approval", "--reason", "fixed"])
    assert resumed.exit_code == 0
    decided = runner.invoke(app, ["decide", "loan_approval", "--input", GOOD])
    assert json.loads(decided.stdout)["route"] == "auto"
    assert runner.invoke(app, ["kill", "--reason", "x"]).exit_code == 2
    assert runner.invoke(app, ["kill", "--all", "--reason", "x"]).exit_code == 0


def test_token_create(env: Path) -> None:
    result = runner.invoke(
        app, ["token", "create", "--name", "svc", "--role", "caller", "--point", "loan_approval"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("wdn_")
    bad = runner.invoke(app, ["token", "create", "--name", "svc", "--role", "boss", "--point", "*"])
    assert bad.exit_code == 1 and "roles are" in bad.stderr


def test_init_creates_the_ledger_key(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    key = key_path(tmp_path / "home")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
