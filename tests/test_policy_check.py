"""Loading decision point files: every mistake is reported as file:line with a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import LOAN_POINT, write_points
from warden.errors import PolicyError
from warden.policy.loader import check_points, load_point, load_points


def _write(tmp_path: Path, text: str) -> Path:
    write_points(tmp_path)
    path = tmp_path / "point.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _error(tmp_path: Path, text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_point(_write(tmp_path, text))
    return info.value


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_valid_point_loads_with_content_hash_version(tmp_path: Path) -> None:
    point = load_point(_write(tmp_path, LOAN_POINT))
    assert point.name == "loan_approval"
    assert len(point.version) == 64
    again = load_point(_write(tmp_path, LOAN_POINT + "\n# a comment changes nothing\n"))
    assert again.version == point.version
    changed = load_point(_write(tmp_path, LOAN_POINT.replace("0.85", "0.9")))
    assert changed.version != point.version


def test_unknown_field_names_line_and_allowed_fields(tmp_path: Path) -> None:
    text = LOAN_POINT.replace("  timeout_ms: 500", "  timeout_msec: 500")
    error = _error(tmp_path, text)
    assert error.line == _line_of(text, "timeout_msec")
    assert "unknown field 'timeout_msec'" in error.message
    assert "timeout_ms" in error.message


def test_missing_owner(tmp_path: Path) -> None:
    error = _error(tmp_path, LOAN_POINT.replace("owner: credit-risk@example.com\n", ""))
    assert "'owner' is required" in error.message
    assert "accountable owner" in error.message


def test_cel_syntax_error_points_at_the_rule(tmp_path: Path) -> None:
    text = LOAN_POINT.replace('when: "input.amount > 50000"', 'when: "input.amount > "')
    error = _error(tmp_path, text)
    assert error.line == _line_of(text, "large_amount")
    assert "large_amount" in error.message and "syntax" in error.message.lower()


def test_unknown_input_field_in_rule(tmp_path: Path) -> None:
    text = LOAN_POINT.replace("input.amount > 50000", "input.amout > 50000")
    error = _error(tmp_path, text)
    assert "input.amout" in error.message and "amount" in error.message
    assert error.line == _line_of(text, "large_amount")


def test_unknown_variable_in_rule(tmp_path: Path) -> None:
    error = _error(tmp_path, LOAN_POINT.replace("confidence >= 0.85", "score >= 0.85"))
    assert "unknown variable" in error.message and "score" in error.message


def test_rule_compares_output_with_unknown_outcome(tmp_path: Path) -> None:
    text = LOAN_POINT.replace(
        'when: "confidence >= 0.85"', "when: \"output == 'aprove' && confidence >= 0.85\""
    )
    error = _error(tmp_path, text)
    assert "'aprove'" in error.message and "outcomes" in error.message


def test_failure_path_must_be_review_or_an_outcome(tmp_path: Path) -> None:
    text = LOAN_POINT.replace("on_error: review", "on_error: approve_all")
    error = _error(tmp_path, text)
    assert "failure.on_error" in error.message
    assert error.line == _line_of(text, "on_error")


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    error = _error(tmp_path, "point: x\nowner: [unclosed\n")
    assert error.line is not None and "YAML" in error.message


def test_invalid_json_schema(tmp_path: Path) -> None:
    error = _error(
        tmp_path, LOAN_POINT.replace("type: number, minimum: 0}", "type: numbr, minimum: 0}", 1)
    )
    assert "JSON Schema" in error.message


def test_check_collects_every_error_and_duplicate_points(tmp_path: Path) -> None:
    write_points(tmp_path)
    (tmp_path / "a.yaml").write_text(textwrap.dedent(LOAN_POINT))
    (tmp_path / "b.yaml").write_text("point: b\n")
    good, errors = check_points([tmp_path])
    assert [p.name for p in good] == ["loan_approval"]
    assert len(errors) == 1 and errors[0].file.endswith("b.yaml")
    (tmp_path / "b.yaml").write_text(textwrap.dedent(LOAN_POINT))
    with pytest.raises(PolicyError, match="also declared"):
        load_points(tmp_path)
