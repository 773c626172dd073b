"""The `monitoring:` block of a point file: unknown fields refused, every mistake at file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import LOAN_POINT, write_points
from tests.monitoring import MONITORING, monitored_points
from warden.errors import PolicyError
from warden.policy.loader import load_point


def _error(tmp_path: Path, monitoring: str) -> tuple[PolicyError, str]:
    folder = monitored_points(tmp_path / "points")
    text = textwrap.dedent(LOAN_POINT).rstrip() + "\n" + textwrap.dedent(monitoring)
    path = folder / "loan_approval.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_point(path)
    return info.value, text


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_example_block_loads(tmp_path: Path) -> None:
    point = load_point(monitored_points(tmp_path / "points") / "loan_approval.yaml")
    spec = point.spec.monitoring
    assert spec is not None and spec.reference is not None
    assert spec.reference.path == "reference.csv"
    assert [r.id for r in spec.alerts] == ["input_drift", "review_surge"]
    assert spec.alerts[1].for_ == 600.0


def test_unknown_field_in_an_alert_rule(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("for: 10m", "for: 10m, severty: high"))
    assert "unknown field 'severty'" in error.message
    assert "for" in error.message and "severity" in error.message and "for_" not in error.message
    assert error.line == _line_of(text, "severty")


def test_unknown_metric_names_the_rule_line(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("metric: review_rate", "metric: reveiw_rate"))
    assert "'reveiw_rate' is not a monitored metric" in error.message
    assert "review_rate" in error.message
    assert error.line == _line_of(text, "reveiw_rate")


def test_drift_of_an_unknown_column(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("metric: drift_share", "metric: drift.amout"))
    assert "drift.amout" in error.message and "amount" in error.message
    assert error.line == _line_of(text, "drift.amout")


def test_reference_file_must_exist(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("reference.csv", "missing.csv"))
    assert "no file 'missing.csv'" in error.message and "first_n" in error.message
    assert error.line == _line_of(text, "missing.csv")


def test_reference_needs_exactly_one_source(tmp_path: Path) -> None:
    error, text = _error(
        tmp_path, MONITORING.replace("{path: reference.csv}", "{path: reference.csv, first_n: 100}")
    )
    assert "exactly one of `path`" in error.message
    assert error.line == _line_of(text, "first_n: 100")


def test_test_override_must_fit_the_column_kind(tmp_path: Path) -> None:
    block = MONITORING.replace(
        "drift: {correction: holm}",
        "drift:\n    tests:\n      amount: {test: chisquare, kind: numeric}",
    )
    error, text = _error(tmp_path, block)
    assert "does not apply to a numeric column" in error.message
    assert error.line == _line_of(text, "chisquare")


def test_duplicate_alert_ids(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("id: review_surge", "id: input_drift"))
    assert "used twice" in error.message
    assert error.line == _line_of(text, "metric: review_rate")


def test_bad_duration(tmp_path: Path) -> None:
    error, text = _error(tmp_path, MONITORING.replace("for: 10m", "for: ten minutes"))
    assert "not a duration" in error.message
    assert error.line == _line_of(text, "ten minutes")


def test_points_without_monitoring_are_unchanged(tmp_path: Path) -> None:
    folder = write_points(tmp_path / "plain", LOAN_POINT)
    assert load_point(folder / "loan_approval.yaml").spec.monitoring is None
