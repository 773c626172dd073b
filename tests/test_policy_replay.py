"""Policy diff and replay: the effect of a policy change on recorded decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.conftest import LOAN_POINT, write_points
from warden.cli.app import app
from warden.decision import Route
from warden.engine import Engine
from warden.policy.diff import diff_specs
from warden.policy.loader import load_point, load_points
from warden.policy.replay import replay, reroute, same_input_schema
from warden.store import queries

SCORES = [700, 780, 800, 830, 840]  # toy model confidence = (score - 300) / 550


def _new_policy(tmp_path: Path, threshold: str = "0.95") -> Path:
    folder = write_points(tmp_path / "new")
    path = folder / "loan_approval.yaml"
    path.write_text(LOAN_POINT.replace("0.85", threshold).replace("> 50000", "> 30000"))
    return path


def _decide_all(engine: Engine) -> None:
    for score in SCORES:
        engine.decide("loan_approval", {"amount": 100, "income": 1, "credit_score": score})
    engine.decide("loan_approval", {"amount": 40000, "income": 1, "credit_score": 840})
    engine.decide("loan_approval", {"amount": 1, "income": 1, "credit_score": 840, "mode": "error"})


def test_replay_counts_every_transition(engine: Engine, tmp_path: Path) -> None:
    _decide_all(engine)
    new = load_point(_new_policy(tmp_path))
    with engine.db.connect() as conn:
        recorded = queries.recent_decisions(conn, "loan_approval", 100)
    assert [d.route.value for d in recorded] == [
        "review",
        "auto",
        "auto",
        "auto",
        "auto",
        "auto",
        "review",
    ]
    result = replay(new, recorded)
    assert result.total == 7
    # 780 and 800 fall below 0.95; 40000 now exceeds the lower amount limit; 830/840 stay auto
    auto_to_review = result.transitions[("auto", "review")]
    assert auto_to_review.count == 3
    assert auto_to_review.reasons["low_confidence"] == 2
    assert auto_to_review.reasons["large_amount"] == 1
    assert result.transitions[("auto", "auto")].count == 2
    # a model failure stays on the failure path: replay never invents a model output
    assert result.transitions[("review", "review")].count == 2
    assert result.changed == 3
    assert result.before["auto"] == 5 and result.after["auto"] == 2


def test_replay_with_the_same_policy_changes_nothing(engine: Engine, points_dir: Path) -> None:
    _decide_all(engine)
    with engine.db.connect() as conn:
        recorded = queries.recent_decisions(conn, "loan_approval", 100)
    result = replay(load_point(points_dir / "loan_approval.yaml"), recorded)
    assert result.changed == 0


def test_diff_matches_rules_by_id(points_dir: Path, tmp_path: Path) -> None:
    old = load_point(points_dir / "loan_approval.yaml").spec
    new = load_point(_new_policy(tmp_path)).spec
    changes = {(c.section, c.key, c.kind) for c in diff_specs(old, new)}
    assert changes == {
        ("rules.review", "large_amount", "changed"),
        ("rules.review", "low_confidence", "changed"),
        ("rules.auto", "confident", "changed"),
    }


def test_cli_replay_and_diff(
    engine: Engine, points_dir: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _decide_all(engine)
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    runner = CliRunner()
    new = _new_policy(tmp_path)
    result = runner.invoke(app, ["policy", "replay", str(new), "--last", "100", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["replayed"] == 7 and data["changed"] == 3
    table = runner.invoke(app, ["policy", "replay", str(new)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "would take another route" in table.stdout
    version = engine.points["loan_approval"].version
    diff = runner.invoke(app, ["policy", "diff", version[:10], str(new)], env={"COLUMNS": "200"})
    assert diff.exit_code == 0, diff.output
    assert "low_confidence" in diff.stdout and "0.95" in diff.stdout
    missing = runner.invoke(app, ["policy", "diff", "ffffffff", str(new)])
    assert missing.exit_code == 1


def test_replay_equals_live_routing_under_the_new_policy(
    engine: Engine, tmp_path: Path, db: sa.Engine
) -> None:
    inputs = [
        {"amount": a, "income": 1, "credit_score": s}
        for a in (100, 40000, 60000)
        for s in range(300, 851, 25)
    ]
    inputs += [{**inputs[0], "mode": "error"}, {**inputs[0], "country": "XX"}]
    recorded = [engine.decide("loan_approval", x) for x in inputs]
    new_folder = _new_policy(tmp_path).parent
    live = Engine(load_points(new_folder), db, actor="live")
    try:
        new_point = live.points["loan_approval"]
        for old, item in zip(recorded, inputs, strict=True):
            now = live.decide("loan_approval", item)
            assert reroute(new_point, old) == (now.route.value, [r.code for r in now.reasons])
    finally:
        live.close()


def test_a_decision_tightened_by_an_alert_stays_tightened(engine: Engine, tmp_path: Path) -> None:
    engine.tightened["loan_approval"] = "alert 'drift' firing"
    tightened = engine.decide("loan_approval", {"amount": 1, "income": 1, "credit_score": 840})
    assert tightened.route is Route.REVIEW and tightened.reasons[0].code == "alert_tighten"
    looser = load_point(_new_policy(tmp_path, threshold="0.5"))
    assert reroute(looser, tightened)[0] == "review"


def test_inputs_are_checked_again_only_where_the_schema_changed(
    engine: Engine, tmp_path: Path
) -> None:
    _decide_all(engine)
    with engine.db.connect() as conn:
        recorded = queries.replay_rows(conn, "loan_approval", 100)
        schemas = queries.input_schemas(conn, "loan_approval")
    old_version = recorded[0].policy_version
    same = load_point(_new_policy(tmp_path))  # other thresholds, the same input schema
    assert same_input_schema(same, schemas) == {old_version}
    assert replay(same, recorded, validated_under={old_version}).after == (
        replay(same, recorded).after
    )
    stricter_file = write_points(tmp_path / "strict") / "loan_approval.yaml"
    stricter_file.write_text(
        LOAN_POINT.replace(
            "required: [amount, income, credit_score]", "required: [amount, term]"
        ).replace("mode: {type: string}", "mode: {type: string}\n    term: {type: integer}")
    )
    stricter = load_point(stricter_file)
    assert same_input_schema(stricter, schemas) == frozenset()
    result = replay(stricter, recorded, validated_under=same_input_schema(stricter, schemas))
    assert result.after == {"refused": len(recorded)}  # none of them sent a term
