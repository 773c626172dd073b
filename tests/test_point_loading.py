"""Loading points: check loads what serve loads, rule types meet the input schema, and one
broken point is reported (log, /v1/points, /readyz, monitor status) while the others serve."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import cel
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import AGENT_POINT, LOAN_POINT, write_points
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.cli.app import app
from warden.engine import Engine
from warden.errors import PointUnavailable, PolicyError
from warden.policy.loader import check_points, load_available, load_point
from warden.policy.typecheck import check_rule_types, is_type_error

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}
runner = CliRunner()


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, t in enumerate(path.read_text().splitlines(), 1) if needle in t)


def _broken_folder(folder: Path) -> Path:
    """The two good points, plus one whose model function does not exist."""
    write_points(folder, LOAN_POINT, AGENT_POINT)
    text = LOAN_POINT.replace("point: loan_approval", "point: loan_broken")
    (folder / "loan_broken.yaml").write_text(text.replace("toy_model:predict", "toy_model:gone"))
    return folder


# -- policy check loads models, as serve does ---------------------------------------------


def test_check_reports_a_missing_model_function_at_its_line(tmp_path: Path) -> None:
    folder = _broken_folder(tmp_path / "points")
    good, errors = check_points([folder])
    assert sorted(p.name for p in good) == ["loan_approval", "refund_agent"]
    (error,) = errors
    broken = folder / "loan_broken.yaml"
    assert error.file == str(broken) and error.line == _line_of(broken, "function:")
    assert "has no function 'gone'" in error.message
    good, errors = check_points([folder], models=False)  # --no-models: only the files
    assert not errors and len(good) == 3


def test_check_reports_a_missing_model_file(tmp_path: Path) -> None:
    from tests.test_rollout import POINT  # an sklearn point whose base.joblib does not exist

    (tmp_path / "credit.yaml").write_text(POINT)
    _, (error,) = check_points([tmp_path])
    assert "base.joblib" in error.message and "does not exist" in error.message
    assert error.line == _line_of(tmp_path / "credit.yaml", "path:")
    assert check_points([tmp_path], models=False)[1] == []


def test_cli_check_fails_on_a_model_and_passes_with_no_models(tmp_path: Path) -> None:
    folder = _broken_folder(tmp_path / "points")
    result = runner.invoke(app, ["policy", "check", str(folder)])
    assert result.exit_code == 1
    assert f"{folder / 'loan_broken.yaml'}:" in result.output.replace("\n", "")
    assert runner.invoke(app, ["policy", "check", "--no-models", str(folder)]).exit_code == 0


# -- CEL types against the input schema ---------------------------------------------------


def test_a_string_compared_with_a_number_field_is_an_error_at_its_line(tmp_path: Path) -> None:
    write_points(tmp_path)
    path = tmp_path / "point.yaml"
    path.write_text(LOAN_POINT.replace("input.amount > 50000", "input.amount > '500'"))
    with pytest.raises(PolicyError) as info:
        load_point(path)
    assert info.value.line == _line_of(path, "large_amount")
    assert "input.amount" in info.value.message and "'500'" in info.value.message
    assert "without quotes: 500" in info.value.message


@pytest.mark.parametrize(
    "when",
    [
        "'500' < input.amount",
        "input.country == 3",
        "input.credit_score != true",
        "input.amount + 'x' == 'y'",  # no literal next to the field: found by the trial
        "input['amount'] > '1'",
    ],
)
def test_type_mismatches_are_found(when: str) -> None:
    types = {"amount": {"number"}, "credit_score": {"integer"}, "country": {"string"}}
    assert check_rule_types("r", when, types) is not None


@pytest.mark.parametrize(
    "when",
    [
        "input.amount > 500",
        "input.amount > 500.5 && input.credit_score >= 700",
        "input.amount * 2 > 100",  # int or double: fine for one of them, so not rejected
        "has(input.country) && input.country in ['XX']",
        "input.note == null || input.note == 'x'",
        "input.tags.exists(t, t == 'vip')",  # an array: no type is assumed
        "size(input.country) > 2",
    ],
)
def test_rules_that_can_work_are_accepted(when: str) -> None:
    types = {
        "amount": {"number"},
        "credit_score": {"integer"},
        "country": {"string"},
        "note": {"string", "null"},
        "tags": {"array"},
    }
    assert check_rule_types("r", when, types) is None


SAMPLES = {
    "number": st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(10**6), 10**6),
    "integer": st.integers(-(10**6), 10**6),
    "string": st.text(max_size=5),
    "boolean": st.booleans(),
}
LITERALS = {"number": ["500", "2.5", "-1"], "string": ["'500'", '"x"'], "boolean": ["true"]}


@settings(max_examples=60, deadline=None)
@given(
    declared=st.sampled_from(sorted(SAMPLES)),
    kind=st.sampled_from(sorted(LITERALS)),
    index=st.integers(0, 2),
    op=st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
    flipped=st.booleans(),
    data=st.data(),
)
def test_a_rejected_comparison_never_works_and_an_accepted_one_does(
    declared: str, kind: str, index: int, op: str, flipped: bool, data: st.DataObject
) -> None:
    """The invariant: rejected iff no valid input can make the comparison evaluate normally."""
    literal = LITERALS[kind][index % len(LITERALS[kind])]
    when = f"{literal} {op} input.f" if flipped else f"input.f {op} {literal}"
    problem = check_rule_types("r", when, {"f": {declared}})
    program = cel.compile(when)
    values = [data.draw(SAMPLES[declared]) for _ in range(3)]
    outcomes: list[object] = []
    for value in values:
        try:
            outcomes.append(program.execute(cel.Context({"input": {"f": value}})))
        except Exception as exc:
            assert is_type_error(exc), exc
            outcomes.append("overload")
    same_kind = kind == declared or (kind == "number" and declared == "integer")
    if same_kind:
        assert problem is None and "overload" not in outcomes
    else:
        assert problem is not None
        assert all(o == "overload" or o == (op == "!=") for o in outcomes)


# -- one broken point does not stop the others --------------------------------------------


def test_a_file_that_does_not_parse_is_reported_and_the_others_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_points(tmp_path / "points", LOAN_POINT, AGENT_POINT)
    (folder / "typo.yaml").write_text("point: typo\nowner: x\ninput: [unclosed\n")
    with caplog.at_level(logging.ERROR):
        loaded = load_available(folder)
    assert sorted(loaded.points) == ["loan_approval", "refund_agent"]
    (broken,) = loaded.broken
    assert broken.name is None and broken.error.file == str(folder / "typo.yaml")
    assert f"{folder / 'typo.yaml'}:" in caplog.text and "not valid YAML" in caplog.text


@pytest.fixture
def half_broken(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    loaded = load_available(_broken_folder(tmp_path / "points"))
    engine = Engine(loaded.points, db, actor="test", broken=loaded.broken)
    yield engine
    engine.close()


def test_a_point_whose_model_cannot_load_does_not_stop_the_others(
    half_broken: Engine,
) -> None:
    assert sorted(half_broken.points) == ["loan_approval", "refund_agent"]
    assert half_broken.decide("loan_approval", GOOD).point == "loan_approval"
    with pytest.raises(PointUnavailable) as info:
        half_broken.decide("loan_broken", GOOD)
    assert "loan_broken.yaml:" in info.value.message and "gone" in info.value.message
    assert info.value.http_status == 503


def test_http_reports_the_broken_point(half_broken: Engine) -> None:
    secret, _ = create_token(
        half_broken.recorder, name="a", roles=["admin"], points=["*"], actor="test"
    )
    auth = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(half_broken)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        (item,) = ready.json()["unavailable"]
        assert item["point"] == "loan_broken" and item["line"] and "gone" in item["message"]
        points = {p["point"]: p for p in client.get("/v1/points", headers=auth).json()}
        assert points["loan_approval"]["status"] == "serving"
        assert points["loan_broken"]["status"] == "unavailable"
        assert "loan_broken.yaml:" in points["loan_broken"]["error"]
        response = client.post(
            "/v1/decisions", headers=auth, json={"point": "loan_broken", "input": GOOD}
        )
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "point_unavailable"
        good = client.post(
            "/v1/decisions", headers=auth, json={"point": "loan_approval", "input": GOOD}
        )
        assert good.status_code in (200, 202)


@pytest.fixture
def broken_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = _broken_folder(tmp_path / "points")
    monkeypatch.setenv("WARDEN_CONFIG", str(folder))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    return folder


def test_cli_decides_good_points_and_monitor_status_names_the_broken(broken_env: Path) -> None:
    ok = runner.invoke(app, ["decide", "loan_approval", "--input", json.dumps(GOOD)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["point"] == "loan_approval"
    bad = runner.invoke(app, ["decide", "loan_broken", "--input", json.dumps(GOOD)])
    assert bad.exit_code == 1 and "point_unavailable" in bad.output
    status = runner.invoke(app, ["monitor", "status"])
    assert status.exit_code == 0, status.output
    assert "UNAVAILABLE" in status.output and "loan_broken.yaml:" in status.output
    found = json.loads(runner.invoke(app, ["monitor", "status", "--json"]).stdout)
    assert {h["point"]: h["status"] for h in found}["loan_broken"] == "unavailable"


def test_decide_with_a_missing_input_file_is_a_clear_error(broken_env: Path) -> None:
    result = runner.invoke(app, ["decide", "loan_approval", "--input", "@nowhere.json"])
    assert result.exit_code == 2
    assert "cannot read nowhere.json" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_serve_on_a_busy_port_fails_before_loading(broken_env: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert "already in use" in result.output and "--port" in result.output


def test_the_server_factory_says_why_it_cannot_start_without_a_traceback(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from warden.api.app import create_app_from_env

    monkeypatch.setenv("WARDEN_CONFIG", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exited:
        create_app_from_env()
    assert exited.value.code == 1
    (record,) = [r for r in caplog.records if "cannot start" in r.getMessage()]
    assert "no-such-folder" in record.getMessage() and "WARDEN_CONFIG" in record.getMessage()
    assert record.exc_info is None  # one line, not a traceback
