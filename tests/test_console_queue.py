"""The reviewer's queue: fields a point names are shown and sorted by; verdicts are named so
that nobody confuses "no outcome" with "decline"; after a verdict comes the next task."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reviewing import LOAN_WITH_REVIEW, REVIEW_INPUT, review_points, token
from warden.api.app import create_app
from warden.console.routes import sort_tasks
from warden.engine import Engine
from warden.errors import PolicyError
from warden.policy.loader import load_point, load_points, policy_version
from warden.readable import moment, number

DISPLAYED = LOAN_WITH_REVIEW.replace(
    "  lease: 15m\n", "  lease: 15m\n  display: [amount, country]\n"
)
AMOUNTS = [90000, 250000.5, 61000, 120000]


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "points", DISPLAYED)), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[]), follow_redirects=False) as test_client:
        headers, _ = token(engine, ["reviewer"], groups=["credit-officers"], name="olga")
        secret = headers["Authorization"].removeprefix("Bearer ")
        page = test_client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        test_client.post("/console/login", data={"csrf": csrf.group(1), "token": secret})
        yield test_client


def _ids_in_order(html: str) -> list[str]:
    return re.findall(r'href="/console/tasks/([0-9a-f-]{36})"', html)


def test_the_queue_shows_and_sorts_by_the_fields_a_point_names(
    client: TestClient, engine: Engine
) -> None:
    made = {
        amount: engine.decide("loan_approval", {**REVIEW_INPUT, "amount": amount}).id
        for amount in AMOUNTS
    }
    page = client.get("/console/queue").text
    assert 'data-sort="amount"' in page and 'data-sort="country"' in page
    assert "250,000.5" in page and "90,000" in page and "90000.0" not in page
    down = _ids_in_order(client.get("/console/queue?sort=amount&order=desc").text)
    assert down == [made[a] for a in sorted(AMOUNTS, reverse=True)]
    up = _ids_in_order(client.get("/console/queue?sort=amount&order=asc").text)
    assert up == [made[a] for a in sorted(AMOUNTS)]
    ignored = client.get("/console/queue?sort=income")  # not named by the point: oldest first
    assert _ids_in_order(ignored.text) == list(made.values())


def test_display_must_name_declared_fields(tmp_path: Path) -> None:
    review_points(tmp_path, DISPLAYED.replace("[amount, country]", "[amount, salary]"))
    path = tmp_path / "loan_approval.yaml"
    with pytest.raises(PolicyError) as info:
        load_point(path)
    assert "salary" in info.value.message and "amount" in info.value.message
    assert info.value.line == next(
        n for n, t in enumerate(path.read_text().splitlines(), 1) if "display:" in t
    )


def test_files_without_display_keep_their_policy_version(tmp_path: Path) -> None:
    """Adding the field must not turn every existing file into a new (pending) version."""
    plain = load_point(review_points(tmp_path) / "loan_approval.yaml")
    dumped = plain.spec.model_dump(mode="json")
    assert dumped["review"]["display"] == []
    with_display = load_point(review_points(tmp_path / "d", DISPLAYED) / "loan_approval.yaml")
    assert with_display.version != plain.version
    assert policy_version(plain.spec) == plain.version


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(10**9), 10**9),
            st.floats(-1e9, 1e9, allow_nan=False),
            st.text(max_size=4),
        ),
        max_size=12,
    ),
    descending=st.booleans(),
)
def test_sorting_keeps_every_task_numbers_in_order_and_missing_last(
    values: list[object], descending: bool
) -> None:
    from types import SimpleNamespace

    tasks = [
        SimpleNamespace(decision=SimpleNamespace(input={} if v is None else {"f": v}), i=i)
        for i, v in enumerate(values)
    ]
    ordered = sort_tasks(tasks, "f", descending=descending)  # type: ignore[arg-type]
    assert sorted(t.i for t in ordered) == list(range(len(values)))  # nothing lost or doubled
    seen = [values[t.i] for t in ordered]
    numbers = [v for v in seen if isinstance(v, int | float)]
    assert numbers == sorted(numbers, reverse=descending)
    missing = [i for i, v in enumerate(seen) if v is None]
    assert missing == list(range(len(seen) - len(missing), len(seen)))


def test_actions_are_named_and_a_verdict_leads_to_the_next_task(
    client: TestClient, engine: Engine
) -> None:
    first = engine.decide("loan_approval", REVIEW_INPUT).id
    second = engine.decide("loan_approval", {**REVIEW_INPUT, "amount": 95000}).id
    page = client.get("/console/queue").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    claimed = client.post(f"/console/tasks/{first}/claim", data={"csrf": csrf.group(1)})
    assert claimed.status_code == 303
    task = client.get(f"/console/tasks/{first}").text
    assert "Close without an outcome" in task and "not</strong> a decline" in task
    assert ">Reject<" not in task and 'class="danger"' not in task
    closed = client.post(
        f"/console/tasks/{first}/reject",
        data={"csrf": csrf.group(1), "reason": "no payslip", "reason_code": "missing_documents"},
    )
    assert closed.status_code == 303
    assert closed.headers["location"].startswith(f"/console/tasks/{second}?after=")
    following = client.get(closed.headers["location"]).text
    assert "previous task was closed without an outcome" in following
    assert f"/console/tasks/{second}/approve" in following  # claimed for this reviewer
    approved = client.post(f"/console/tasks/{second}/approve", data={"csrf": csrf.group(1)})
    assert approved.headers["location"] == "/console/queue?done=approved"  # none left


def test_readable_values() -> None:
    from datetime import UTC, datetime

    assert number(23100.0) == "23,100" and number(1234567) == "1,234,567"
    assert number(250000.5) == "250,000.5" and number(0.0491) == "0.0491"
    stamp = datetime(2026, 11, 30, 2, 46, 32, 607425, tzinfo=UTC)
    assert moment(stamp) == "2026-11-30 02:46:32 UTC"
    assert moment(stamp.isoformat()) == "2026-11-30 02:46:32 UTC"


def test_a_caller_token_is_refused_at_login_with_a_way_forward(
    engine: Engine, tmp_path: Path
) -> None:
    headers, _ = token(engine, ["caller"], name="service")
    secret = headers["Authorization"].removeprefix("Bearer ")
    with TestClient(create_app(engine, workers=[]), follow_redirects=False) as fresh:
        page = fresh.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        response = fresh.post("/console/login", data={"csrf": csrf.group(1), "token": secret})
        assert response.status_code == 403
        assert "only the caller role" in response.text and "warden token create" in response.text
        assert fresh.get("/console/queue").status_code == 303  # no session was opened
