"""State is a projection of the ledger: any change to a state row made outside Warden is found.

A deployment with decisions of every route, review tasks claimed, voted and settled, ground
truth, an agent's executed tool call, kill switches, principals (one disabled), tokens (one
rotated) and users is built on each backend. Each Hypothesis example then
changes one row the way someone with database access would — a column updated, a row deleted, a
row inserted — inside a transaction, runs the state check on that same transaction (so it sees
the change), and rolls back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.reviewing import (
    AUTO_INPUT,
    FOUR_EYES_INPUT,
    REVIEW_INPUT,
    Clock,
    review_points,
    reviewer,
    token,
)
from warden.api.app import create_app
from warden.auth.lifecycle import disable_principal, disable_user, revoke_token, rotate_token
from warden.auth.principals import principal_id_for
from warden.auth.users import create_user
from warden.cli.app import app
from warden.engine import Engine
from warden.ledger import projection
from warden.ledger.chain import EventDraft
from warden.ledger.folds import FOLDS, TABLES
from warden.ledger.projection import Disagreement, Kind, StateReport, time_text, verify_state
from warden.ledger.verify import verify_ledger
from warden.mcp.ledger import claim_change
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.store.database import alembic_config, migrate, write_connection
from warden.store.recorder import Change, DuplicateKey
from warden.store.schema import decisions, principals, tokens, tool_executions, users

examples = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@dataclass
class Deployment:
    db: sa.Engine
    engine: Engine
    auto: str  # an auto decision, with ground truth
    pending: str  # a decision waiting for review, claimed
    settled: str  # a review decision approved by a reviewer
    executed: str  # an agent's tool call, approved and executed
    rotated: str  # the token that replaced the owner's


@pytest.fixture(params=["batches of 2000", "batches of 1"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are read a batch at a time; in batches of one every merge step crosses an edge."""
    if request.param == "batches of 1":
        monkeypatch.setattr(projection, "_BATCH", 1)


@pytest.fixture
def deployment(tmp_path: Path, db: sa.Engine) -> Iterator[Deployment]:
    clock = Clock()
    engine = Engine(load_points(review_points(tmp_path / "points")), db, actor="test")
    desk = ReviewDesk(engine, clock=clock)
    try:
        auto = engine.decide("loan_approval", AUTO_INPUT).id
        engine.record_ground_truth(auto, "approve", actor="test")
        for amount in (1100, 1200):
            engine.decide("loan_approval", {**AUTO_INPUT, "amount": amount})
        refused = engine.decide("loan_approval", {**AUTO_INPUT, "country": "XX"})
        assert refused.route == "refused"
        settled = engine.decide("loan_approval", REVIEW_INPUT).id
        pending = engine.decide("loan_approval", {**REVIEW_INPUT, "amount": 95000}).id
        four_eyes = engine.decide("loan_approval", FOUR_EYES_INPUT).id
        _, alice = reviewer(engine, "alice")
        _, bob = reviewer(engine, "bob")
        desk.claim(alice, settled)
        clock.advance(30)
        desk.approve(alice, settled)
        desk.claim(bob, pending)
        desk.claim(alice, four_eyes)
        desk.approve(alice, four_eyes)
        _, owner = token(engine, ["owner"], points=["*"], name="owner")
        _, rotated = rotate_token(engine.recorder, owner.token_id, actor="admin")
        token(engine, ["caller"], name="dave")
        disable_principal(engine.recorder, "dave", actor="ops", reason="left")
        executed = engine.decide("loan_approval", {**AUTO_INPUT, "amount": 1300}).id
        binding = {"server": "payments", "tool": "refund", "arguments_digest": "ab" * 32}
        claim = claim_change(
            actor="agent:refunds",
            point="loan_approval",
            decision_id=executed,
            binding=binding,
            now=datetime.now(UTC),
        )
        engine.recorder.record(claim)
        create_user(
            engine.recorder,
            username="carol",
            password="a long enough password",
            roles=["reviewer"],
            points=["loan_approval"],
            groups=["credit-officers"],
            actor="test",
        )
        engine.set_kill("refund_agent", True, actor="ops", reason="incident 7")
        engine.set_kill("refund_agent", False, actor="ops", reason="resolved")
        engine.set_kill("loan_approval", True, actor="ops", reason="drift")
        yield Deployment(db, engine, auto, pending, settled, executed, rotated.id)
    finally:
        engine.close()


def _check(conn: sa.Connection) -> StateReport:
    return verify_state(conn, conn.dialect.name)


def test_an_untouched_deployment_agrees_with_its_ledger(deployment: Deployment) -> None:
    report = verify_ledger(deployment.db, [])
    assert report.ok, report.to_dict()
    assert report.projection is not None and report.projection.unchecked == 0
    rows = report.projection.rows
    assert rows["decisions"] == 8 and rows["review_tasks"] == 3 and rows["tool_executions"] == 1
    assert rows["tokens"] == 5 and rows["users"] == 1 and rows["kill_switches"] == 2
    assert rows["principals"] == 5  # owner, alice, bob, carol, dave


# -- any single change to any row is found --------------------------------------------------


def _rows(conn: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def _other(column: sa.Column[Any], value: Any, draw: st.DrawFn) -> Any:
    """A different value of the column's type, as an attacker would write it."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return not value
    if isinstance(kind, sa.DateTime):
        base = value or datetime(2026, 1, 1, tzinfo=UTC)
        return base + timedelta(seconds=draw(st.integers(1, 10**6)))
    if isinstance(kind, sa.Float):
        return (value or 0.0) + draw(st.sampled_from([0.5, -0.25, 1e-9]))
    if isinstance(kind, sa.Integer):
        return (value or 0) + draw(st.integers(1, 5))
    if isinstance(kind, sa.JSON):
        choices = [["admin"], ["*"], {"tampered": True}, [], "x"]
        return draw(st.sampled_from([c for c in choices if c != value]))
    length = getattr(kind, "length", None) or 64
    options = ["auto", "final", "approve", "admin", "x", hashlib.sha256(b"x").hexdigest()]
    return draw(st.sampled_from([o[:length] for o in options if o[:length] != value]))


def _key(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in TABLES[table.name].key}


def _new_key(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """Another primary key for a copy of `row` (the last key column changed)."""
    key = _key(table, row)
    last = TABLES[table.name].key[-1]
    key[last] = f"{str(key[last])[:20]}-forged"
    return key


def _unique(table: sa.Table) -> list[str]:
    """The column a copy of a row must change to keep each unique constraint (not the key)."""
    found = [c.name for c in table.columns if c.unique]
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and constraint.columns:
            found.append(list(constraint.columns)[-1].name)
    return found


@dataclass(frozen=True)
class Tamper:
    kind: str  # update, delete, insert, or rekey (a key column updated)
    table: sa.Table
    key: dict[str, Any]  # of the row affected
    column: str = ""
    before: Any = None
    after: Any = None


def tamper(draw: st.DrawFn, conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> Tamper:
    """One change to `row` the way someone with database access would make it."""
    key = _key(table, row)
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    kind = draw(st.sampled_from(["update", "delete", "insert"]))
    if kind == "delete":
        conn.execute(table.delete().where(where))
        return Tamper(kind, table, key)
    if kind == "insert":
        copy = {**row, **_new_key(table, row)}
        for unique in _unique(table):
            if copy.get(unique) is not None:
                copy[unique] = hashlib.sha256(repr(copy).encode()).hexdigest()
        conn.execute(table.insert().values(**copy))
        return Tamper(kind, table, _key(table, copy))
    column = draw(st.sampled_from(TABLES[table.name].columns))
    return change(draw, conn, table, row, column)


def change(
    draw: st.DrawFn, conn: sa.Connection, table: sa.Table, row: dict[str, Any], column: str
) -> Tamper:
    """`column` of `row` set to another value of its type."""
    key = _key(table, row)
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    if column in key:
        conn.execute(table.update().where(where).values(**_new_key(table, row)))
        return Tamper("rekey", table, key, column)
    value = _other(table.c[column], row[column], draw)
    conn.execute(table.update().where(where).values({column: value}))
    return Tamper("update", table, key, column, row[column], value)


@st.composite
def tampering(draw: st.DrawFn, conn: sa.Connection) -> Tamper:
    """One change to one row of any projected table."""
    tables = [t.table for t in TABLES.values() if _rows(conn, t.table)]
    table = draw(st.sampled_from(tables))
    row = draw(st.sampled_from(sorted(_rows(conn, table), key=repr)))
    return tamper(draw, conn, table, row)


def _compared(table: sa.Table, column: str, value: Any) -> Any:
    """A value in the form the check reports it (times as UTC text, digests of hashes)."""
    if isinstance(table.c[column].type, sa.DateTime):
        return time_text(value, parse=True)
    digest = TABLES[table.name].stored.get(column)
    return digest(value) if digest else value


def assert_found(done: Tamper, report: StateReport, events: dict[int, str]) -> None:
    """The change is named: table, key, column, both values, and an event of the ledger."""
    name = done.table.name
    assert not report.ok, done
    found = [(d.kind, d.table, d.key, d.column) for d in report.disagreements]

    def named(kind: str, key: dict[str, Any], column: str | None = None) -> Disagreement:
        hits = [
            d
            for d in report.disagreements
            if (d.kind, d.table, d.key, d.column) == (kind, name, key, column)
        ]
        assert hits, (done, found)
        return hits[0]

    if done.kind == "update":
        hit = named(Kind.CHANGED, done.key, done.column)
        assert hit.stored == _compared(done.table, done.column, done.after), (done, hit)
        assert hit.implied == _compared(done.table, done.column, done.before), (done, hit)
        assert hit.seq in events and events[hit.seq] in FOLDS, (done, hit)
        assert (
            name in hit.message
            and done.column in hit.message
            and f"event {hit.seq}" in (hit.message)
        )
    elif done.kind == "delete":
        gone = named(Kind.DELETED, done.key)
        assert gone.seq is not None and events[gone.seq] in FOLDS, (done, gone)
    elif done.kind == "insert":
        named(Kind.INSERTED, done.key)
    else:  # the key itself changed: the old row is missing, the new one has no event
        named(Kind.DELETED, done.key)
        assert any(d[0] == Kind.INSERTED and d[1] == name for d in found)


def _events(conn: sa.Connection) -> dict[int, str]:
    return {
        int(seq): str(kind) for seq, kind in conn.execute(sa.text("SELECT seq, type FROM events"))
    }


@examples
@given(data=st.data())
def test_any_change_to_any_state_row_is_found(
    batch: None, deployment: Deployment, data: st.DataObject
) -> None:
    # the write lock from the start: on SQLite a read snapshot turned writer fails at once when
    # the log was checkpointed meanwhile (the recorder's checkpointer runs in the background)
    with write_connection(deployment.db) as conn, conn.begin() as tx:
        events = _events(conn)
        done = data.draw(tampering(conn))
        report = _check(conn)
        tx.rollback()
    assert_found(done, report, events)


CREDENTIALS = (principals, tokens, users, tool_executions)


@settings(examples, max_examples=2, phases=[Phase.generate])  # each example: ~100 checks
@given(data=st.data())
def test_every_column_of_every_authority_row_is_checked(
    deployment: Deployment, data: st.DataObject
) -> None:
    """Who may act, and which approvals were used up: every column of every row of these
    tables, changed in turn, is named with both values and the event that set it."""
    with deployment.db.connect() as conn:
        events = _events(conn)
        targets = [
            (table, row, column)
            for table in CREDENTIALS
            for row in sorted(_rows(conn, table), key=repr)
            for column in TABLES[table.name].columns
        ]
    assert {t.name for t, _, _ in targets} == {t.name for t in CREDENTIALS}
    for table, row, column in targets:
        with write_connection(deployment.db) as conn, conn.begin() as tx:
            done = change(data.draw, conn, table, row, column)
            report = _check(conn)
            tx.rollback()
        assert_found(done, report, events)


# -- the attacks, by name ---------------------------------------------------------------------


def _tamper(db: sa.Engine, statement: Any) -> None:
    with db.begin() as conn:
        conn.execute(statement)


def test_a_changed_outcome_is_named_with_the_event_that_set_it(deployment: Deployment) -> None:
    db = deployment.db
    _tamper(
        db, decisions.update().where(decisions.c.id == deployment.auto).values(outcome="decline")
    )
    report = verify_ledger(db, [])
    assert not report.ok and report.problems == []  # the history is intact; the state is not
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.table, found.key, found.column) == (
        "decisions",
        {"id": deployment.auto},
        "outcome",
    )
    assert (found.stored, found.implied) == ("decline", "approve")
    with db.connect() as conn:
        created = conn.execute(
            sa.text("SELECT seq FROM events WHERE decision_id = :d AND type = 'decision.created'"),
            {"d": deployment.auto},
        ).scalar()
    assert found.seq == created


def test_a_pending_decision_turned_auto_and_final_is_found(deployment: Deployment) -> None:
    db = deployment.db
    forged = {"route": "auto", "status": "final", "outcome": "approve"}
    _tamper(db, decisions.update().where(decisions.c.id == deployment.pending).values(**forged))
    report = verify_ledger(db, [])
    assert report.projection is not None and not report.ok
    columns = {
        d.column for d in report.projection.disagreements if d.key == {"id": deployment.pending}
    }
    assert columns == {"route", "status", "outcome"}


def test_a_settled_review_changed_after_the_fact_is_found(deployment: Deployment) -> None:
    db = deployment.db
    _tamper(
        db, decisions.update().where(decisions.c.id == deployment.settled).values(outcome="decline")
    )
    report = verify_ledger(db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.column, found.stored, found.implied) == ("outcome", "decline", "approve")
    with db.connect() as conn:
        approved = conn.execute(
            sa.text("SELECT seq FROM events WHERE decision_id = :d AND type = 'review.approved'"),
            {"d": deployment.settled},
        ).scalar()
    assert found.seq == approved  # the reviewer's verdict set it, not the decision's creation


def test_a_deleted_decision_is_found(deployment: Deployment) -> None:
    _tamper(deployment.db, decisions.delete().where(decisions.c.id == deployment.auto))
    report = verify_ledger(deployment.db, [])
    assert report.projection is not None and not report.ok
    (found,) = report.projection.disagreements
    assert (found.kind, found.table, found.key) == (
        Kind.DELETED,
        "decisions",
        {"id": deployment.auto},
    )


@pytest.mark.parametrize("roles", [["admin"], ["*"]])
def test_a_token_given_more_roles_is_found(deployment: Deployment, roles: list[str]) -> None:
    with deployment.db.connect() as conn:
        token_id = conn.execute(sa.select(tokens.c.id).where(tokens.c.name == "alice")).scalar()
    _tamper(deployment.db, tokens.update().where(tokens.c.id == token_id).values(roles=roles))
    report = verify_ledger(deployment.db, [])
    assert report.projection is not None and not report.ok
    (found,) = report.projection.disagreements
    assert (found.table, found.key, found.column) == ("tokens", {"id": token_id}, "roles")
    assert (found.stored, found.implied) == (roles, ["reviewer"])


def test_a_token_inserted_outside_warden_is_found(deployment: Deployment) -> None:
    with deployment.db.connect() as conn:
        row = dict(conn.execute(sa.select(tokens).limit(1)).one()._mapping)
    forged = {**row, "id": "f0f0f0f0f0f0", "secret_hash": "ab" * 32, "roles": ["admin"]}
    _tamper(deployment.db, tokens.insert().values(**forged))
    report = verify_ledger(deployment.db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.kind, found.table, found.key) == (Kind.INSERTED, "tokens", {"id": "f0f0f0f0f0f0"})


def test_a_swapped_password_hash_is_found(deployment: Deployment) -> None:
    stmt = users.update().where(users.c.username == "carol").values(password_hash="$argon2id$x")
    _tamper(deployment.db, stmt)
    report = verify_ledger(deployment.db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.table, found.column) == ("users", "password_hash")


def test_the_cli_names_the_disagreement_and_exits_1(
    deployment: Deployment, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_CONFIG", str(tmp_path / "points"))
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    _tamper(
        deployment.db,
        decisions.update().where(decisions.c.id == deployment.auto).values(outcome="decline"),
    )
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"decisions id={deployment.auto}: outcome" in result.stdout
    assert '"decline"' in result.stdout and '"approve"' in result.stdout
    as_json = runner.invoke(app, ["audit", "verify", "--json"])
    assert as_json.exit_code == 1, as_json.output
    state = json.loads(as_json.stdout)["projection"]
    assert state["disagreements"] == 1 and state["listed"][0]["column"] == "outcome"


def test_http_verify_reports_the_state(deployment: Deployment) -> None:
    headers, _ = token(deployment.engine, ["auditor"], points=["*"], name="auditor")
    with TestClient(create_app(deployment.engine)) as client:
        assert client.get("/v1/audit/verify", headers=headers).json()["ok"] is True
        _tamper(deployment.db, decisions.delete().where(decisions.c.id == deployment.auto))
        body = client.get("/v1/audit/verify", headers=headers).json()
    assert body["ok"] is False and body["problems"] == []
    assert body["projection"]["listed"][0]["kind"] == "deleted"


# -- events written before they recorded everything -------------------------------------------


def test_older_events_leave_columns_unchecked_rather_than_failing(db: sa.Engine) -> None:
    """A decision event without `request_hash` (written before events carried it) verifies;
    the column is counted as unchecked, and the columns it does record are still checked."""
    engine = Engine({}, db, actor="test")
    try:
        row = {
            "id": "00000000-0000-7000-8000-000000000001",
            "point": "loan_approval",
            "route": "auto",
            "status": "final",
            "outcome": "approve",
            "proposed_outcome": "approve",
            "confidence": 0.9,
            "reasons": [],
            "policy_version": "v1",
            "model_version": "7",
            "input": {"amount": 1},
            "context": {},
            "idempotency_key": None,
            "request_hash": "ab" * 32,
            "actor": "old",
            "ground_truth": None,
            "ground_truth_at": None,
        }
        draft = EventDraft(
            type="decision.created",
            actor="old",
            point="loan_approval",
            decision_id=row["id"],
            payload={
                k: row[k]
                for k in (
                    "route",
                    "status",
                    "outcome",
                    "proposed_outcome",
                    "confidence",
                    "reasons",
                    "input",
                    "context",
                    "policy_version",
                    "model_version",
                    "idempotency_key",
                )
            },
        )
        row.update(created_at=draft.ts, decided_at=draft.ts)
        engine.recorder.record(Change(events=[draft], decision=row))
        report = verify_ledger(db, [])
        assert report.ok and report.projection is not None and report.projection.unchecked == 1
        _tamper(db, decisions.update().values(outcome="decline"))
        assert not verify_ledger(db, []).ok
    finally:
        engine.close()


def test_revoked_and_rotated_tokens_and_disabled_users_follow_from_their_events(
    deployment: Deployment,
) -> None:
    recorder = deployment.engine.recorder
    with deployment.db.connect() as conn:
        alice, bob = (
            conn.execute(sa.select(tokens.c.id).where(tokens.c.name == name)).scalar_one()
            for name in ("alice", "bob")
        )
    revoke_token(recorder, alice, actor="admin", reason="left the team")
    rotate_token(recorder, bob, actor="admin")
    disable_user(recorder, "carol", actor="admin", reason="left")
    report = verify_ledger(deployment.db, [])
    assert report.ok, report.projection and report.projection.to_dict()
    assert report.projection is not None and report.projection.unchecked == 0  # all derived
    # a revocation undone in the database is found
    _tamper(deployment.db, tokens.update().where(tokens.c.id == alice).values(revoked_at=None))
    report = verify_ledger(deployment.db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.table, found.key, found.column) == ("tokens", {"id": alice}, "revoked_at")


# -- who may act, and which approvals were used up ---------------------------------------------


def _seq(db: sa.Engine, kind: str, **payload: str) -> int:
    """The seq of the one event of `kind` whose payload holds `payload`."""
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq, body FROM events WHERE type = :t"), {"t": kind})
        found = [
            int(seq)
            for seq, body in rows
            if all(json.loads(body)["payload"].get(k) == v for k, v in payload.items())
        ]
    assert len(found) == 1, (kind, payload, found)
    return found[0]


def test_a_rotated_tokens_swapped_secret_hash_is_found(deployment: Deployment) -> None:
    """Whoever can write the database swaps in the hash of a secret they know: the rotated
    token's hash is recorded by the rotation, so the swap is named."""
    db = deployment.db
    forged = hashlib.sha256(b"wdn_known_to_the_attacker").hexdigest()
    _tamper(db, tokens.update().where(tokens.c.id == deployment.rotated).values(secret_hash=forged))
    report = verify_ledger(db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.table, found.key, found.column, found.stored) == (
        "tokens",
        {"id": deployment.rotated},
        "secret_hash",
        forged,
    )
    assert found.seq == _seq(db, "token.rotated", new_token_id=deployment.rotated)


def test_a_disabled_principal_enabled_again_is_found(deployment: Deployment) -> None:
    db = deployment.db
    dave = principal_id_for("dave")
    _tamper(db, principals.update().where(principals.c.id == dave).values(disabled_at=None))
    report = verify_ledger(db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.table, found.key, found.column, found.stored) == (
        "principals",
        {"id": dave},
        "disabled_at",
        None,
    )
    assert found.seq == _seq(db, "principal.disabled", principal_id=dave)


def test_a_used_approval_made_usable_again_is_found(deployment: Deployment) -> None:
    """Deleting a tool call's execution row would let its approval run the call again."""
    db = deployment.db
    stmt = tool_executions.delete().where(tool_executions.c.decision_id == deployment.executed)
    _tamper(db, stmt)
    report = verify_ledger(db, [])
    assert report.projection is not None
    (found,) = report.projection.disagreements
    assert (found.kind, found.table, found.key) == (
        Kind.DELETED,
        "tool_executions",
        {"decision_id": deployment.executed},
    )
    with db.connect() as conn:
        executed = conn.execute(
            sa.text("SELECT seq FROM events WHERE decision_id = :d AND type = :t"),
            {"d": deployment.executed, "t": "tool_call.executed"},
        ).scalar()
    assert found.seq == executed


def test_credentials_older_than_principals_imply_their_migrated_principal(db: sa.Engine) -> None:
    """Events written before principals carry no `principal_id`: migration 0009 gave such a
    token and user the principal named after them, which the check derives (its creation time,
    the token's secret hash and the user's password digest, never recorded, are unchecked)."""
    engine = Engine({}, db, actor="test")
    try:
        now = datetime.now(UTC)
        pid = principal_id_for("erin")
        token_row = {
            "id": "0123456789ab",
            "name": "erin",
            "secret_hash": "cd" * 32,
            "roles": ["caller"],
            "points": ["loan_approval"],
            "created_by": "admin",
            "created_at": now,
            "revoked_at": None,
            "groups": [],
            "principal_id": pid,
            "expires_at": None,
        }
        user_row = {
            "username": "erin",
            "password_hash": "$argon2id$v=19$old",
            "roles": ["reviewer"],
            "points": ["*"],
            "groups": ["credit-officers"],
            "created_by": "admin",
            "created_at": now,
            "disabled_at": None,
            "principal_id": pid,
        }
        migrated = {
            "id": pid,
            "name": "erin",
            "kind": "person",
            "created_by": "migration:0009",
            "created_at": now + timedelta(days=30),
            "disabled_at": None,
        }
        old = [  # as written before principals (and before tokens recorded groups)
            EventDraft(
                "token.created",
                "admin",
                {k: token_row[k] for k in ("name", "roles", "points")}
                | {"token_id": "0123456789ab"},
            ),
            EventDraft(
                "user.created",
                "admin",
                {k: user_row[k] for k in ("username", "roles", "points", "groups")},
            ),
        ]

        def rows(conn: sa.Connection) -> None:
            conn.execute(tokens.insert().values(**token_row))
            conn.execute(users.insert().values(**user_row))
            conn.execute(principals.insert().values(**migrated))

        engine.recorder.record(Change(events=old, apply=rows))
        report = verify_ledger(db, [])
        assert report.ok, report.projection and report.projection.to_dict()
        assert report.projection is not None and report.projection.rows["principals"] == 1
        # secret hash and creation of the token, password and creation of the user, creation of
        # the principal: what those events did not record
        assert report.projection.unchecked == 5
        for table, where, column, value in (
            (principals, principals.c.id == pid, "kind", "service"),
            (principals, principals.c.id == pid, "created_by", "admin"),
            (tokens, tokens.c.id == "0123456789ab", "principal_id", principal_id_for("x")),
            (tokens, tokens.c.id == "0123456789ab", "expires_at", now + timedelta(days=1)),
            (tokens, tokens.c.id == "0123456789ab", "groups", ["credit-officers"]),
            (users, users.c.username == "erin", "principal_id", principal_id_for("x")),
        ):
            with write_connection(db) as conn, conn.begin() as tx:
                conn.execute(table.update().where(where).values({column: value}))
                state = _check(conn)
                tx.rollback()
            assert [(d.table, d.column) for d in state.disagreements] == [(table.name, column)]
    finally:
        engine.close()


def test_migration_0012_writes_the_rows_of_calls_executed_before_0008(db: sa.Engine) -> None:
    """Before 0008 an executed call was its event alone. Its row is missing (the check says
    so) until 0012 writes it; then the approval is single-use by the row too, and verifies."""
    engine = Engine({}, db, actor="test")
    decision = "00000000-0000-7000-8000-0000000000e1"
    try:
        claim = claim_change(
            actor="agent:refunds",
            point="refund_agent",
            decision_id=decision,
            binding={"server": "payments", "tool": "refund"},
            now=datetime.now(UTC),
        )
        engine.recorder.record(Change(events=claim.events))  # as the code before 0008 did
        report = verify_ledger(db, [])
        assert report.projection is not None
        (found,) = report.projection.disagreements
        assert (found.kind, found.table) == (Kind.DELETED, "tool_executions")
        command.downgrade(alembic_config(db), "0010")
        migrate(db)
        migrate(db)  # and again: nothing is written twice
        report = verify_ledger(db, [])
        assert report.ok, report.projection and report.projection.to_dict()
        assert report.projection is not None
        assert report.projection.rows["tool_executions"] == 1
        again = claim_change(
            actor="agent:refunds",
            point="refund_agent",
            decision_id=decision,
            binding={"server": "payments", "tool": "refund"},
            now=datetime.now(UTC),
        )
        with pytest.raises(DuplicateKey):
            engine.recorder.record(again)
    finally:
        engine.close()
