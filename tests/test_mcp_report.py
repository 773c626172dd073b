"""The per-tool report (GET /v1/tools and the console's Tools page): counts of governed calls
by route, denials by code, override rate and latency, from the database, over real HTTP."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from warden.api.app import create_app
from warden.auth.tokens import Principal, Role, create_token
from warden.demo.server import BackgroundServer, bind
from warden.engine import Engine
from warden.errors import InvalidRequest
from warden.mcp.report import percentile, report_window, tool_report
from warden.mcp.tool import ToolPending, ToolRefused
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.sdk.local import Warden

FIXTURES = Path(__file__).parent / "mcp_fixtures"
REVIEWER = Principal("t-rev", "alice", frozenset({Role.REVIEWER}), frozenset({"*"}))


@pytest.fixture
def warden(tmp_path: Path, db: sa.Engine, warden_home: Path) -> Iterator[Warden]:
    shutil.copytree(FIXTURES / "points", tmp_path / "agent_points")
    engine = Engine(load_points(tmp_path / "agent_points"), db, actor="test")
    yield Warden(engine, home=warden_home)
    engine.close()


def _agent_session(warden: Warden) -> None:
    """3 auto reads (one slow), 1 refused delete, 4 held refunds: two approved and run, one
    rejected by a reviewer, one still pending."""

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        if account == "slow":
            time.sleep(0.05)
        return "100"

    @warden.tool("agent_tools")
    def delete_record(record: str) -> None:
        raise AssertionError("never runs")

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    def refund(account: str, amount: float) -> str:
        return "refunded"

    for account in ("a", "b", "slow"):
        read_balance(account)
    with pytest.raises(ToolRefused):
        delete_record("r1")
    held = []
    for account in ("x", "y", "z", "w"):
        with pytest.raises(ToolPending) as pending:
            refund(account, 5.0)
        held.append(pending.value.decision_id)
    desk = ReviewDesk(warden.engine)
    desk.claim(REVIEWER, held[0])
    desk.approve(REVIEWER, held[0])
    refund("x", 5.0, warden_decision_id=held[0])
    desk.claim(REVIEWER, held[1])
    desk.reject(REVIEWER, held[1], reason="not this customer", reason_code="wrong_customer")
    with pytest.raises(ToolRefused, match="rejected"):
        refund("y", 5.0, warden_decision_id=held[1])
    desk.claim(REVIEWER, held[2])
    desk.approve(REVIEWER, held[2])
    refund("z", 5.0, warden_decision_id=held[2])
    _results_committed(warden, 5)


def _results_committed(warden: Warden, expected: int) -> None:
    """The agent is answered before its result event commits (it rides with the next write):
    wait for them, as a report read a moment later would."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with warden.engine.db.connect() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM events WHERE type = 'tool_call.result'")
            ).scalar_one()
        if found >= expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{found} of {expected} result events committed")


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(minutes=1)


def test_report_counts_routes_denials_overrides_and_latency(warden: Warden) -> None:
    _agent_session(warden)
    report = tool_report(warden.engine.db, *_window())
    rows = {r["tool"]: r for r in report["data"]}
    assert set(rows) == {"read_balance", "delete_record", "refund"}
    reads, deletes, refunds = rows["read_balance"], rows["delete_record"], rows["refund"]
    assert reads["routes"] == {"auto": 3, "review": 0, "refused": 0, "fallback": 0}
    assert reads["executed"] == 3 and reads["denials"] == {}
    assert reads["latency_ms"]["tool"]["p99"] >= 50.0  # the slow call
    assert reads["latency_ms"]["tool"]["p50"] < 50.0
    assert reads["latency_ms"]["governance"]["p50"] > 0.0
    assert deletes["routes"]["refused"] == 1 and deletes["denials"] == {"refused": 1}
    assert deletes["executed"] == 0 and deletes["calls"] == 1
    assert refunds["routes"]["review"] == 4 and refunds["calls"] == 4
    assert refunds["reviewed"] == 3 and refunds["overridden"] == 1
    assert refunds["override_rate"] == 0.3333
    assert refunds["denials"] == {"rejected": 1} and refunds["executed"] == 2
    assert report["data"][0]["tool"] in ("read_balance", "refund")  # busiest first
    # outside the window: nothing
    old = datetime.now(UTC) - timedelta(days=2)
    assert tool_report(warden.engine.db, old, old + timedelta(hours=1))["data"] == []
    # a reader of other points sees none of these tools
    hidden = tool_report(warden.engine.db, *_window(), visible=lambda point: False)
    assert hidden["data"] == []


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=60), st.floats(0.01, 1))
def test_percentile_is_the_nearest_rank(values: list[float], q: float) -> None:
    found = percentile(values, q)
    assert found in values
    at_or_below = sum(1 for v in values if v <= found)
    assert at_or_below >= q * len(values) - 1e-9
    assert sum(1 for v in values if v < found) < q * len(values) + 1e-9


def test_a_bad_window_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequest, match=r"window: .soon. is not a duration"):
        report_window("soon", None)
    with pytest.raises(InvalidRequest, match=r"until: .tomorrow. is not an ISO 8601"):
        report_window("1h", "tomorrow")
    since, until = report_window("15m", "2026-12-06T15:00:00Z")
    assert until - since == timedelta(minutes=15)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_api_and_console_page_over_http(warden: Warden) -> None:
    _agent_session(warden)
    engine: Engine = warden.engine
    auditor, _ = create_token(
        engine.recorder, name="aud", roles=["auditor"], points=["agent_tools"], actor="t"
    )
    stranger, _ = create_token(
        engine.recorder, name="other", roles=["auditor"], points=["loan_approval"], actor="t"
    )
    background = BackgroundServer(create_app(engine), bind("127.0.0.1", 0))
    url = f"http://127.0.0.1:{background.port}"
    background.start(f"{url}/readyz")
    try:
        api = httpx.get(
            f"{url}/v1/tools",
            params={"window": "1h"},
            headers={"Authorization": f"Bearer {auditor}"},
        )
        assert api.status_code == 200, api.text
        rows = {r["tool"]: r for r in api.json()["data"]}
        assert rows["refund"]["override_rate"] == 0.3333
        assert rows["read_balance"]["routes"]["auto"] == 3
        other = httpx.get(f"{url}/v1/tools", headers={"Authorization": f"Bearer {stranger}"})
        assert other.status_code == 200 and other.json()["data"] == []
        bad = httpx.get(
            f"{url}/v1/tools",
            params={"window": "soon"},
            headers={"Authorization": f"Bearer {auditor}"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "window"
        assert httpx.get(f"{url}/v1/tools").status_code == 401

        with httpx.Client(base_url=url) as browser:
            assert browser.get("/console/tools").status_code == 303  # to the login
            login = browser.get("/console/login")
            done = browser.post(
                "/console/login", data={"csrf": _csrf(login.text), "token": auditor}
            )
            assert done.status_code == 303, done.text
            page = browser.get("/console/tools", params={"window": "24h"})
        assert page.status_code == 200
        html = page.text
        assert '<script src="http' not in html and "cdn" not in html.lower()
        refund_row = re.search(r'<tr data-tool="refund">(.*?)</tr>', html, re.S)
        assert refund_row, html
        cells = refund_row.group(1)
        assert re.search(r'class="calls">4<', cells)
        assert re.search(r'class="review">4<', cells)
        assert "rejected 1" in cells and "33% of 3" in cells
        read_row = re.search(r'<tr data-tool="read_balance">(.*?)</tr>', html, re.S)
        assert read_row and re.search(r'class="auto">3<', read_row.group(1))
        assert re.search(r'class="tool-ms">[0-9.]+ / [0-9.]+ ms<', read_row.group(1))
        assert 'value="24h" selected' in html
    finally:
        background.stop()
