"""Listings at 80 columns keep the id whole and offer --json; ids may be given by a prefix."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from warden.cli.app import app
from warden.cli.tables import Column, fitted, resolve_prefix
from warden.errors import InvalidRequest

runner = CliRunner()
REVIEWED = '{"amount": 60000, "income": 5000, "credit_score": 800}'  # large_amount: review
UUID = "01a22aae-86bf-70c6-814a-8bbb865e35b0"


def _render(table: object, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width)
    console.print(table)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


cells = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=0, max_size=30)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(50, 200),
    rows=st.lists(st.lists(cells, min_size=5, max_size=5), min_size=1, max_size=4),
)
def test_a_fitted_table_fits_and_keeps_the_id_whole(width: int, rows: list[list[str]]) -> None:
    columns = [
        Column("id"),
        Column("a", drop=1),
        Column("b", drop=2, wrap=True),
        Column("c", drop=3),
        Column("d", drop=4),
    ]
    data = [[UUID, *row[1:]] for row in rows]
    lines = _render(fitted(columns, data, width=width), width)
    assert all(len(line) <= width for line in lines)
    assert sum(UUID in line for line in lines) == len(data)  # whole, on one line each


def test_columns_are_left_out_in_order_and_named(tmp_path: Path) -> None:
    columns = [Column("id"), Column("least", drop=9), Column("useful", drop=1)]
    row = [UUID, "x" * 25, "y" * 25]
    lines = "\n".join(_render(fitted(columns, [row], width=80), 80))
    assert "useful" in lines and "least" not in lines.split("not shown")[0]
    assert "not shown at this width: least" in lines


@pytest.fixture
def ids(db: sa.Engine) -> list[str]:
    table = sa.Table("things", sa.MetaData(), sa.Column("id", sa.String(36), primary_key=True))
    table.create(db)
    values = ["01a2aaaa-0000", "01a2aaab-0000", "01a2bbbb-0000", "x_y%z-0000"]
    with db.begin() as conn:
        conn.execute(table.insert(), [{"id": v} for v in values])
    return values


def test_resolve_prefix(db: sa.Engine, ids: list[str]) -> None:
    column = sa.table("things", sa.column("id", sa.String)).c.id
    with db.connect() as conn:
        assert resolve_prefix(conn, column, "01a2b") == "01a2bbbb-0000"
        assert resolve_prefix(conn, column, "01a2aaab-0000") == "01a2aaab-0000"
        assert resolve_prefix(conn, column, "ffff") == "ffff"  # unknown: the command says so
        assert resolve_prefix(conn, column, "x_y%") == "x_y%z-0000"  # wildcards are literal
        assert resolve_prefix(conn, column, "x_y_") == "x_y_"
        with pytest.raises(InvalidRequest) as info:
            resolve_prefix(conn, column, "01a2aaa")
    assert "01a2aaaa-0000" in info.value.message and "01a2aaab-0000" in info.value.message


@pytest.fixture
def env(points_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    return points_dir


def test_review_list_at_80_columns_and_by_prefix(env: Path) -> None:
    made = [runner.invoke(app, ["decide", "loan_approval", "--input", REVIEWED]) for _ in range(2)]
    first, second = (json.loads(r.stdout)["id"] for r in made)
    listed = runner.invoke(app, ["review", "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any(first in line for line in lines) and any(second in line for line in lines)
    as_json = json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout)
    assert {t["decision_id"] for t in as_json} == {first, second}
    common = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    shown = runner.invoke(app, ["review", "show", first[: common + 1]])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["decision_id"] == first
    ambiguous = runner.invoke(app, ["review", "show", first[:common]])
    assert ambiguous.exit_code == 1
    assert "several ids" in ambiguous.output and first in ambiguous.output


def test_listings_offer_json(env: Path) -> None:
    assert runner.invoke(app, ["decide", "loan_approval", "--input", REVIEWED]).exit_code == 0
    versions = runner.invoke(app, ["policy", "versions", "loan_approval", "--json"])
    assert versions.exit_code == 0, versions.output
    (live,) = json.loads(versions.stdout)
    assert live["status"] == "live" and len(live["version"]) == 64
    for command in (["model", "list", "loan_approval"], ["model", "history", "loan_approval"]):
        result = runner.invoke(app, [*command, "--json"])
        assert result.exit_code == 0, result.output
        assert isinstance(json.loads(result.stdout), list)
