"""Reference data: CSV and Parquet files, the first N decisions, and the report's reader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from warden.engine import Engine
from warden.monitor.report import read_period, since_ago
from warden.monitor.sources import ReferenceError, first_decisions, load_file

KINDS = {"amount": "numeric", "country": "categorical"}


def test_csv_columns_and_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("amount,country,ignored\n10.5,DE,x\n,FR,y\n3,,z\n")
    assert load_file(path, KINDS) == {"amount": [10.5, None, 3.0], "country": ["DE", "FR", None]}


def test_csv_error_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("amount,country\n1,DE\nabc,FR\n")
    with pytest.raises(ReferenceError) as info:
        load_file(path, KINDS)
    assert f"{path}:3: column 'amount' has 'abc', not a number" in info.value.message
    assert "monitoring.drift.tests.amount.kind" in info.value.message


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"amount": [1.0, 2.5], "country": ["DE", "FR"], "x": [1, 2]}), path)
    assert load_file(path, KINDS) == {"amount": [1.0, 2.5], "country": ["DE", "FR"]}


def test_first_decisions_skip_refused_input_and_wait_for_n(engine: Engine) -> None:
    good = {"amount": 1000, "income": 5000, "credit_score": 800}
    for _ in range(3):
        engine.decide("loan_approval", good)
    with pytest.raises(Exception):  # noqa: B017 - the refusal itself is tested elsewhere
        engine.decide("loan_approval", {"amount": -1, "income": 1, "credit_score": 800})
    columns = ["amount", "credit_score", "output", "confidence"]
    with engine.db.connect() as conn:
        assert first_decisions(conn, "loan_approval", 4, columns) is None
        found = first_decisions(conn, "loan_approval", 3, columns)
    assert found is not None
    data, fingerprint = found
    assert data["amount"] == [1000, 1000, 1000] and data["output"] == ["approve"] * 3
    assert len(fingerprint) == 64


def test_report_reads_in_pages_and_reports_progress(engine: Engine) -> None:
    for score in (800, 810, 820):
        engine.decide("loan_approval", {"amount": 1000, "income": 5000, "credit_score": score})
    seen: list[tuple[int, int]] = []
    period = read_period(
        engine.db,
        "loan_approval",
        datetime.now(UTC) - timedelta(hours=1),
        datetime.now(UTC) + timedelta(minutes=1),
        lambda done, total: seen.append((done, total)),
    )
    assert period.total == 3 and seen[-1] == (3, 3)
    assert period.routes["auto"] == 3


def test_since_ago() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert since_ago("30d", now) == datetime(2026, 1, 30, tzinfo=UTC)
    assert since_ago("2026-02-01", now) == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        since_ago("last week", now)
