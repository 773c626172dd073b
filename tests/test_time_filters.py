"""`since` and `until` name instants: written with any UTC offset, they select the same
decisions on every database (SQLite compared the text of the time as given)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.store.queries import DecisionFilter, list_decisions
from warden.store.schema import decisions

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOURS = 12
GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


@pytest.fixture
def spread(engine: Engine) -> dict[str, datetime]:
    """One decision per hour from BASE: id -> created_at."""
    made = {}
    for hour in range(HOURS):
        decision = engine.decide("loan_approval", GOOD)
        at = BASE + timedelta(hours=hour)
        with engine.db.begin() as conn:
            conn.execute(
                decisions.update().where(decisions.c.id == decision.id).values(created_at=at)
            )
        made[decision.id] = at
    return made


def _selected(engine: Engine, flt: DecisionFilter) -> set[str]:
    with engine.db.connect() as conn:
        page, _ = list_decisions(conn, flt, cursor=None, limit=500)
    return {d.id for d in page}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    minutes=st.integers(min_value=-60, max_value=HOURS * 60 + 60),
    offset=st.integers(min_value=-14 * 4, max_value=14 * 4).map(
        lambda q: timedelta(minutes=15 * q)
    ),
    naive=st.booleans(),
)
def test_an_instant_selects_the_same_rows_in_any_offset(
    engine: Engine, spread: dict[str, datetime], minutes: int, offset: timedelta, naive: bool
) -> None:
    instant = BASE + timedelta(minutes=minutes)
    written = instant.astimezone(timezone(offset))
    if naive:  # a time without an offset is UTC
        written = instant.replace(tzinfo=None)
    after = {i for i, at in spread.items() if at >= instant}
    assert _selected(engine, DecisionFilter(since=written)) == after
    assert _selected(engine, DecisionFilter(until=written)) == set(spread) - after


def test_the_http_filter_converts_offsets(engine: Engine, spread: dict[str, datetime]) -> None:
    secret, _ = create_token(engine.recorder, name="a", roles=["admin"], points=["*"], actor="t")
    headers = {"Authorization": f"Bearer {secret}"}
    instant = BASE + timedelta(hours=5)
    expected = {i for i, at in spread.items() if at >= instant}
    with TestClient(create_app(engine, workers=[])) as client:
        for written in (
            "2026-03-01T17:00:00Z",
            "2026-03-01T19:30:00+02:30",
            "2026-03-01T08:00:00-09:00",
        ):
            response = client.get(
                "/v1/decisions", params={"since": written, "limit": 500}, headers=headers
            )
            assert response.status_code == 200, response.text
            assert {d["id"] for d in response.json()["data"]} == expected, written
    with engine.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one() == HOURS
