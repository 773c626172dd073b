"""The governed flow of a tool call, in-process: `@warden.tool`, single use under races,
secrets kept out of the ledger, and the gateway file's and points' validation."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.auth.tokens import Principal, Role
from warden.engine import Engine
from warden.errors import PolicyError
from warden.mcp import ledger as tool_events
from warden.mcp.binding import Binding, keyed_digest, mismatch, text_digest
from warden.mcp.config import load_gateway
from warden.mcp.run import check_points
from warden.mcp.secrets import redact
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
    w = Warden(engine, home=warden_home)
    yield w
    engine.close()


def approve(w: Warden, decision_id: str) -> None:
    desk = ReviewDesk(w.engine)
    desk.claim(REVIEWER, decision_id)
    desk.approve(REVIEWER, decision_id)


def events_of(w: Warden, decision_id: str) -> list[tuple[str, str]]:
    with w.engine.db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT type, body FROM events WHERE decision_id = :d ORDER BY seq"),
            {"d": decision_id},
        ).all()
    return [(r[0], r[1]) for r in rows]


def test_sync_tool_auto_refused_and_held_then_run_once(warden: Warden) -> None:
    runs: list[tuple[str, Any]] = []

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        runs.append(("read_balance", account))
        return f"100 on {account}"

    @warden.tool("agent_tools")
    def delete_record(record: str) -> None:
        runs.append(("delete_record", record))

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    def refund(account: str, amount: float) -> str:
        runs.append(("refund", amount))
        return "refunded"

    assert read_balance("a1") == "100 on a1"
    with pytest.raises(ToolRefused, match="not delegated"):
        delete_record("r1")
    with pytest.raises(ToolPending) as held:
        refund("a1", 30.0)
    decision_id = held.value.decision_id
    approve(warden, decision_id)
    with pytest.raises(ToolRefused, match="arguments differ"):
        refund("a1", 31.0, warden_decision_id=decision_id)
    assert refund("a1", 30.0, warden_decision_id=decision_id) == "refunded"
    assert refund("a1", 30.0, warden_decision_id=decision_id) == "refunded"  # recorded, not rerun
    assert runs == [("read_balance", "a1"), ("refund", 30.0)]


def test_async_tool_concurrent_collections_execute_exactly_once(warden: Warden) -> None:
    runs: list[float] = []

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    async def refund(account: str, amount: float) -> str:
        runs.append(amount)
        await asyncio.sleep(0.01)
        return "refunded"

    async def scenario() -> list[Any]:
        with pytest.raises(ToolPending) as held:
            await refund("a2", 9.0)
        decision_id = held.value.decision_id
        await asyncio.to_thread(approve, warden, decision_id)
        attempts = [refund("a2", 9.0, warden_decision_id=decision_id) for _ in range(8)]
        return await asyncio.gather(*attempts, return_exceptions=True)

    answers = asyncio.run(scenario())
    assert runs == [9.0]
    assert all(a == "refunded" for a in answers), answers


def test_a_second_process_cannot_spend_a_spent_approval(
    warden: Warden, db: sa.Engine, tmp_path: Path
) -> None:
    """Two gateways (two engines on one database) racing for one approval: the ledger-locked
    claim lets exactly one through."""
    runs: list[str] = []
    other = Warden(
        Engine(load_points(tmp_path / "agent_points"), db, actor="other"), home=warden.home
    )
    try:

        def make(w: Warden) -> Any:
            @w.tool("agent_tools", annotations={"destructiveHint": True})
            def refund(account: str, amount: float) -> str:
                runs.append(account)
                return "refunded"

            return refund

        mine, theirs = make(warden), make(other)
        with pytest.raises(ToolPending) as held:
            mine("a3", 1.0)
        approve(warden, held.value.decision_id)
        results = []
        for fn in (theirs, mine, theirs):
            try:
                results.append(fn("a3", 1.0, warden_decision_id=held.value.decision_id))
            except ToolRefused as exc:
                results.append(str(exc))
        assert runs == ["a3"]
        assert results[0] == "refunded"
        types = [t for t, _ in events_of(warden, held.value.decision_id)]
        assert types.count(tool_events.EXECUTED) == 1
    finally:
        other.engine.close()


def test_secret_arguments_never_reach_the_ledger(warden: Warden) -> None:
    @warden.tool("agent_tools", annotations={"readOnlyHint": True}, secrets=["card.number"])
    def check_card(card: dict[str, str]) -> str:
        return "ok"

    assert check_card({"number": "4111111111111111", "holder": "Ann"}) == "ok"
    with warden.engine.db.connect() as conn:
        bodies = [r[0] for r in conn.execute(sa.text("SELECT body FROM events")).all()]
        inputs = [str(r[0]) for r in conn.execute(sa.text("SELECT input FROM decisions")).all()]
    assert bodies and not any("4111111111111111" in b for b in bodies + inputs)
    assert any("[redacted] hmac-sha256:" in b for b in bodies)
    assert any("Ann" in b for b in bodies)  # only the named path is hidden


def test_a_tool_that_raises_records_an_error_result(warden: Warden) -> None:
    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def flaky() -> None:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        flaky()
    with warden.engine.db.connect() as conn:
        body = conn.execute(
            sa.text("SELECT body FROM events WHERE type = 'tool_call.result'")
        ).scalar_one()
    assert '"status":"error"' in body and "upstream down" in body


# -- binding, limits, secrets: properties ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=4)


@settings(max_examples=60, deadline=None)
@given(arguments, arguments)
def test_an_approval_authorises_exactly_its_own_arguments(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    from warden.decision import Decision, Route, Status

    key = b"k" * 32
    now = datetime.now(UTC)
    decision = Decision(
        id="d1",
        point="p",
        route=Route.REVIEW,
        status=Status.FINAL,
        outcome="execute",
        proposed_outcome="execute",
        confidence=1.0,
        reasons=[],
        policy_version="v1",
        model_version=None,
        actor="agent:x",
        created_at=now,
        decided_at=now,
        input={
            "server": "s",
            "tool": "t",
            "arguments_digest": keyed_digest(key, a),
            "description_digest": text_digest("d"),
        },
    )
    call = Binding("agent:x", "s", "t", keyed_digest(key, b), text_digest("d"))
    problem = mismatch(decision, call, live_policy="v1", now=now, ttl=60)
    assert (problem is None) == (a == b)
    if a != b:
        assert problem is not None and problem[0] == "arguments_changed"
    assert mismatch(decision, call, live_policy="v2", now=now, ttl=60) is not None


@settings(max_examples=50, deadline=None)
@given(arguments, st.text(min_size=1, max_size=6))
def test_redaction_hides_only_the_named_path(args: dict[str, Any], field: str) -> None:
    secret = {**args, field: "s3cr3t-value"}
    out = redact(secret, [field] if "." not in field else [], b"k" * 32)
    if "." not in field:
        assert "s3cr3t-value" not in str(out[field])
        assert {k: v for k, v in out.items() if k != field} == {
            k: v for k, v in secret.items() if k != field
        }


# -- validation -----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("upstreams: {}\ntools: []\n", 1, "upstreams"),
        (
            "upstreams:\n  bank: {command: x}\ntools:\n  - {server: shop, point: p}\n",
            None,
            "not one of the upstreams",
        ),
        (
            "upstreams:\n  bank: {command: x, url: 'http://h'}\ntools:\n  - {server: bank, point: p}\n",
            2,
            "not both",
        ),
        (
            "upstreams:\n  bank: {command: x}\ntools:\n  - {server: bank, point: p, secret: [a]}\n",
            4,
            "unknown field",
        ),
        (
            "upstreams:\n  bank: {command: x}\ntools:\n  - {server: bank, point: p}\nwait: {timeout: soon}\n",
            5,
            "not a duration",
        ),
        ("upstreams: [\n", None, "not valid YAML"),
    ],
)
def test_bad_gateway_files_are_refused_with_file_line_and_reason(
    tmp_path: Path, text: str, line: int | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as err:
        load_gateway(path)
    assert words in err.value.message
    assert err.value.file == str(path)
    if line is not None:
        assert err.value.line == line


def test_points_that_could_execute_unapproved_calls_are_refused(
    warden: Warden, tmp_path: Path
) -> None:
    base = "upstreams:\n  bank: {command: x}\ntools:\n  - {server: bank, point: %s}\n"
    with pytest.raises(PolicyError, match="no decision point 'nope'"):
        check_points(load_gateway(write(tmp_path, base % "nope")), warden.engine)
    config = load_gateway(write(tmp_path, base % "agent_tools"))
    check_points(config, warden.engine)
    points = tmp_path / "agent_points"
    text = (points / "agent_tools.yaml").read_text()
    (points / "agent_tools.yaml").write_text(text.replace("on_expiry: deny", "on_expiry: execute"))
    engine = Engine(load_points(points), warden.engine.db, actor="test")
    try:
        with pytest.raises(PolicyError, match="executes on SLA expiry"):
            check_points(config, engine)
    finally:
        engine.close()
    held = base % "agent_tools" + "limits: [{tool: send_email, max: 1, per: 1h, exceed: review}]\n"
    (points / "agent_tools.yaml").write_text(text.replace("context.gateway.hold != ''", "false"))
    engine = Engine(load_points(points), warden.engine.db, actor="test")
    try:
        with pytest.raises(PolicyError, match="needs a review rule"):
            check_points(load_gateway(write(tmp_path, held)), engine)
    finally:
        engine.close()


def test_hold_mode_keeps_the_call_open_with_progress_until_approved(warden: Warden) -> None:
    from warden.mcp.config import ToolRule, Wait
    from warden.mcp.governor import Outcome, Runner, ToolCall
    from warden.mcp.tool import governor_for

    governor = governor_for(
        warden,
        "agent_tools",
        key=b"k" * 32,
        wait=Wait(mode="hold", timeout=120, progress_every=0.05, poll=0.02),
        secrets=[],
    )
    assert isinstance(governor.config.tools[0], ToolRule)
    ran: list[int] = []
    progress: list[str] = []

    async def execute() -> str:
        ran.append(1)
        return "refunded"

    async def on_progress(done: float, message: str) -> None:
        progress.append(message)

    call = ToolCall("bot", "agent:bot", "python", "refund", {"amount": 3}, {}, "Refund.")

    async def scenario() -> Any:
        task = asyncio.create_task(
            governor.call(call, Runner(execute, lambda r: Outcome(True, b"r"), None, on_progress))
        )
        for _ in range(2000):
            with warden.engine.db.connect() as conn:
                found = conn.execute(
                    sa.text("SELECT decision_id FROM review_tasks WHERE status = 'open'")
                ).scalar()
            if found and progress:
                break
            await asyncio.sleep(0.01)
        assert found and not ran  # held: open, not run
        await asyncio.to_thread(approve, warden, found)
        return await asyncio.wait_for(task, 120)

    answer = asyncio.run(scenario())
    assert answer.status == "executed" and answer.result == "refunded"
    assert ran == [1]
    assert progress and "held for review as decision" in progress[0]


def test_server_kill_switch_refuses_every_call_to_it_at_once(warden: Warden) -> None:
    from warden.mcp import kill

    runs: list[str] = []

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        runs.append(account)
        return "100"

    assert read_balance("a") == "100"
    kill.set_switch(warden.engine, "server", "python", True, actor="ops", reason="incident")
    with pytest.raises(ToolRefused, match="kill switch server:python is engaged: incident"):
        read_balance("b")
    kill.set_switch(warden.engine, "server", "python", False, actor="ops", reason="over")
    assert read_balance("c") == "100"
    assert runs == ["a", "c"]
    switches = {k.scope: k.engaged for k in warden.engine.kill_switches()}
    assert switches == {"server:python": False}


def test_agent_identity_is_the_principal_behind_its_token(warden: Warden) -> None:
    from warden.auth.tokens import create_token
    from warden.mcp.gateway import identity_from_token

    secret, _ = create_token(
        warden.engine.recorder, name="helpdesk", roles=["caller"], points=["agent_tools"], actor="t"
    )
    who = identity_from_token(warden.engine.db, secret)
    assert who is not None and who.agent == "helpdesk" and who.actor.endswith(":helpdesk")
    assert who.may_call("agent_tools") and not who.may_call("other_point")
    assert identity_from_token(warden.engine.db, secret + "x") is None
    assert identity_from_token(warden.engine.db, None) is None


def test_rejected_or_expired_calls_never_run_and_the_agent_is_told(warden: Warden) -> None:
    from datetime import UTC, datetime, timedelta

    runs: list[float] = []

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    def refund(account: str, amount: float) -> str:
        runs.append(amount)
        return "refunded"

    with pytest.raises(ToolPending) as first:
        refund("a", 1.0)
    desk = ReviewDesk(warden.engine)
    desk.claim(REVIEWER, first.value.decision_id)
    desk.reject(REVIEWER, first.value.decision_id, reason="not owed", reason_code="not_owed")
    with pytest.raises(ToolRefused, match="a reviewer rejected the call: not owed"):
        refund("a", 1.0, warden_decision_id=first.value.decision_id)

    with pytest.raises(ToolPending) as second:
        refund("a", 2.0)
    later = ReviewDesk(warden.engine, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    assert later.expire_due() == 1
    with pytest.raises(ToolRefused, match="nobody approved the call in time"):
        refund("a", 2.0, warden_decision_id=second.value.decision_id)
    assert runs == []


def test_a_switch_engaged_by_another_process_stops_the_very_next_auto_call(
    warden: Warden, db: sa.Engine, tmp_path: Path
) -> None:
    """The gateway skips the switch query while its last commit saw none engaged; a switch
    engaged since (here by another engine on the same database) is caught inside the ledger
    lock by the decision's own commit, so not one call runs after it."""
    from warden.mcp import kill

    runs: list[str] = []
    ops = Engine(load_points(tmp_path / "agent_points"), db, actor="ops")

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        runs.append(account)
        return "100"

    try:
        for round_ in range(3):
            assert read_balance(f"before-{round_}") == "100"
            for kind, name in (("server", "python"), ("agent", "agent")):
                kill.set_switch(ops, kind, name, True, actor="ops", reason=f"stop {round_}")
                with pytest.raises(ToolRefused, match=f"kill switch {kind}:{name} is engaged"):
                    read_balance(f"killed-{round_}")
                kill.set_switch(ops, kind, name, False, actor="ops", reason="over")
                assert read_balance(f"after-{round_}-{kind}") == "100"
    finally:
        ops.close()
    assert not any(r.startswith("killed") for r in runs)
    assert len(runs) == 9
    with db.connect() as conn:
        executed = conn.execute(
            sa.text("SELECT count(*) FROM events WHERE type = 'tool_call.executed'")
        ).scalar_one()
    assert executed == 9


@settings(max_examples=15, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=12), gap=st.sampled_from([0, 0.03]))
def test_every_call_run_has_its_claim_and_exactly_one_result_whatever_the_timing(
    tmp_path_factory: pytest.TempPathFactory, outcomes: list[bool], gap: float
) -> None:
    """Auto-routed calls commit their claim with the decision and their result with the next
    call's decision (or alone, after the linger): each decision that ran ends with exactly
    decision.created, approved, executed, result, in that order, the result saying how it ran."""
    from warden.mcp.config import Wait
    from warden.mcp.governor import Governor, Outcome, Runner, ToolCall
    from warden.mcp.tool import governor_for
    from warden.store.database import create_engine, migrate

    folder = tmp_path_factory.mktemp("riders")
    shutil.copytree(FIXTURES / "points", folder / "points")
    db = create_engine(f"sqlite:///{folder / 'w.db'}")
    migrate(db)
    engine = Engine(load_points(folder / "points"), db, actor="test")
    w = Warden(engine, home=folder / "home")
    base = governor_for(w, "agent_tools", key=b"k" * 32, wait=Wait(mode="pending"), secrets=[])
    governor = Governor(engine, base.config, b"k" * 32, result_linger=0.02)
    ran: list[int] = []

    async def scenario() -> list[str]:
        ids = []
        for i, ok in enumerate(outcomes):

            async def execute(i: int = i, ok: bool = ok) -> str:
                ran.append(i)
                if not ok:
                    raise RuntimeError(f"tool {i} broke")
                return f"done {i}"

            call = ToolCall(
                "agent", "agent:agent", "python", "read_balance", {"n": i}, {"readOnlyHint": True}
            )
            try:
                answer = await governor.call(call, Runner(execute, lambda r: Outcome(True, b"x")))
                ids.append(answer.decision_id)
            except RuntimeError:
                ids.append(None)
            await asyncio.sleep(gap)
        await governor.flush()
        return ids

    try:
        ids = asyncio.run(scenario())
    finally:
        engine.close()
    assert ran == list(range(len(outcomes)))
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT decision_id, type, body FROM events WHERE decision_id IS NOT NULL "
                "ORDER BY seq"
            )
        ).all()
    by_decision: dict[str, list[str]] = {}
    statuses: dict[str, str] = {}
    for decision_id, type_, body in rows:
        by_decision.setdefault(decision_id, []).append(type_)
        if type_ == "tool_call.result":
            statuses[decision_id] = json.loads(body)["payload"]["status"]
    expected = ["decision.created", "tool_call.approved", "tool_call.executed", "tool_call.result"]
    assert len(by_decision) == len(outcomes)
    assert all(types == expected for types in by_decision.values()), by_decision
    succeeded = {d for d in ids if d is not None}
    assert {d for d, s in statuses.items() if s == "success"} == succeeded
    assert sum(s == "error" for s in statuses.values()) == outcomes.count(False)


def _sample(name: str, **labels: str) -> float:
    from warden.monitor.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_tool_calls_are_counted_by_how_they_ended_with_labels_from_the_configuration(
    warden: Warden,
) -> None:
    runs: list[str] = []

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        runs.append(account)
        return "100"

    @warden.tool("agent_tools")
    def delete_record(record: str) -> None:
        runs.append(record)

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    def refund(account: str, amount: float) -> str:
        runs.append(account)
        return "refunded"

    base = {"gateway": "python", "server": "python"}
    before = {
        key: _sample(metric, **base, **labels)
        for key, (metric, labels) in {
            "executed": ("warden_tool_calls_total", {"tool": "read_balance", "status": "executed"}),
            "refused": ("warden_tool_calls_total", {"tool": "delete_record", "status": "refused"}),
            "policy": ("warden_tool_call_denials_total", {"tool": "delete_record", "code": "refused"}),
            "rejected": ("warden_tool_call_denials_total", {"tool": "refund", "code": "rejected"}),
            "reviewed": ("warden_tool_calls_reviewed_total", {"tool": "refund"}),
            "timed": ("warden_tool_call_duration_seconds_count", {"tool": "read_balance", "part": "tool"}),
        }.items()
    }  # fmt: skip
    for i in range(3):
        assert read_balance(f"a{i}") == "100"
    for i in range(2):
        with pytest.raises(ToolRefused):
            delete_record(f"r{i}")
    with pytest.raises(ToolPending) as held:
        refund("a", 5.0)
    desk = ReviewDesk(warden.engine)
    desk.claim(REVIEWER, held.value.decision_id)
    desk.reject(
        REVIEWER, held.value.decision_id, reason="not this one", reason_code="wrong_account"
    )
    with pytest.raises(ToolRefused, match="rejected"):
        refund("a", 5.0, warden_decision_id=held.value.decision_id)

    def delta(key: str, metric: str, **labels: str) -> float:
        return _sample(metric, **base, **labels) - before[key]

    assert delta("executed", "warden_tool_calls_total", tool="read_balance", status="executed") == 3
    assert delta("refused", "warden_tool_calls_total", tool="delete_record", status="refused") == 2
    assert (
        delta("policy", "warden_tool_call_denials_total", tool="delete_record", code="refused") == 2
    )
    assert delta("rejected", "warden_tool_call_denials_total", tool="refund", code="rejected") == 1
    assert delta("reviewed", "warden_tool_calls_reviewed_total", tool="refund") == 1
    assert (
        delta("timed", "warden_tool_call_duration_seconds_count", tool="read_balance", part="tool")
        == 3
    )
    assert runs == ["a0", "a1", "a2"]


REFUSALS_ALERT = """
monitoring:
  window: {count: 20, every: 1h, min_count: 10}
  alerts:
    - {id: agent_refusals, metric: refused_rate, op: ">", threshold: 0.3, for: 0s,
       severity: critical, action: kill,
       description: "the agent's calls are refused far more often than usual"}
"""


def test_an_agent_whose_refusal_rate_jumps_is_stopped_by_its_alert_rule(
    tmp_path: Path, db: sa.Engine, warden_home: Path
) -> None:
    """The alert rule of docs/agents.md: the gateway's point watches its refused rate; when it
    jumps the rule's `kill` action engages the point's switch, and the agent's next call, even
    one the policy would let run alone, is held for a person instead of running."""
    from warden.monitor.worker import Monitor

    folder = tmp_path / "watched"
    shutil.copytree(FIXTURES / "points", folder)
    point = folder / "agent_tools.yaml"
    point.write_text(point.read_text() + REFUSALS_ALERT)
    engine = Engine(load_points(folder), db, actor="test")
    w = Warden(engine, home=warden_home)
    runs: list[str] = []

    @w.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        runs.append(account)
        return "100"

    @w.tool("agent_tools")
    def delete_record(record: str) -> None:
        runs.append(record)

    try:
        monitor = Monitor(engine)
        for i in range(20):  # a normal window: one refusal in twenty
            if i == 7:
                with pytest.raises(ToolRefused):
                    delete_record("x")
            else:
                read_balance(f"n{i}")
        monitor.poll()
        assert not [k for k in engine.kill_switches() if k.engaged]
        for i in range(20):  # the agent goes astray: half its calls are refused
            if i % 2:
                with pytest.raises(ToolRefused):
                    delete_record(f"y{i}")
            else:
                read_balance(f"m{i}")
        monitor.poll()
        (switch,) = [k for k in engine.kill_switches() if k.engaged]
        assert switch.scope == "agent_tools" and switch.actor == "monitor:alert:agent_refusals"
        ran = len(runs)
        with pytest.raises(ToolPending):
            read_balance("after")
        assert len(runs) == ran
    finally:
        engine.close()


def test_under_random_commit_faults_a_call_runs_only_if_its_claim_committed_and_once(
    warden: Warden, db: sa.Engine
) -> None:
    """COMMITs fail before or after going through, at random, while an agent calls auto-routed
    tools: the claim rides on the decision's commit (and is asked again on a retry), results
    ride on the next one. Every call that ran has exactly one approved, one executed and one
    result event; no call without a committed claim ran; the ledger verifies."""
    import random

    from tests.faults import AFTER, BEFORE, Faults
    from tests.ledger_helpers import assert_state_agrees

    faults = Faults(db)
    faults.install(warden.engine.recorder)
    chance = random.Random(11)
    faults.chooser = lambda: chance.choice([None, None, None, BEFORE, AFTER])
    ran: list[str] = []

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        ran.append(account)
        return "100"

    answered = 0
    for i in range(40):
        try:
            read_balance(f"a{i}")
            answered += 1
        except ToolRefused:
            pass  # the decision could not be recorded: the agent is told, nothing ran
    faults.chooser = None
    read_balance("last")
    assert {BEFORE, AFTER} <= set(faults.injected)
    for _ in range(600):  # results commit after the answer; failed ones are tried again
        with db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT decision_id, type FROM events WHERE type LIKE 'tool_call.%' "
                    "ORDER BY seq"
                )
            ).all()
        if sum(t == "tool_call.result" for _, t in rows) >= len(ran):
            break
        time.sleep(0.1)
    by_decision: dict[str, list[str]] = {}
    for decision_id, type_ in rows:
        by_decision.setdefault(decision_id, []).append(type_)
    expected = ["tool_call.approved", "tool_call.executed", "tool_call.result"]
    assert all(types == expected for types in by_decision.values()), by_decision
    assert len(by_decision) == len(ran) == answered + 1
    assert_state_agrees(db)
