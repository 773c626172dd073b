"""What each event implies for the state tables: one fold function per event type.

A fold reads one event and writes the rows it implies into a `Projection` (put, update, delete).
`warden.ledger.projection` folds every event, in order, and compares what results with the
tables. Everything Warden serves or that grants authority is here: decisions and their review
tasks, the executions of agents' tool calls, kill switches, principals, tokens, users, policy
versions, model versions and aliases, rollouts, alerts and the protections they engage.

To cover a new table or event (a token revocation, say):

1. Make the event carry every value its row needs (the writer puts it in the payload; the
   event's own `actor`, `ts`, `point` and `decision_id` need not be repeated).
2. Add the table to `TABLES` with its key columns (`by_decision=True` when keyed by decision id:
   those are streamed per decision so memory stays flat; all others are folded in memory).
3. Write `@fold("token.revoked")` def ...: `p.update(ev, tokens, (ev.payload["token_id"],),
   {"revoked_at": ev.ts})`.

A value an older event did not carry is `UNKNOWN`: the column is not checked for that row (the
report counts such columns) rather than failing events written before the value was recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from warden.auth.principals import principal_id_for
from warden.store import schema as s


class _Unknown:
    """A value the ledger does not record for this row (events written before it did)."""

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"  # the one instance, also in a report from another process


UNKNOWN: Any = _Unknown()


class Event(NamedTuple):  # a tuple: a million are made per check
    seq: int
    type: str
    point: str | None
    decision_id: str | None
    actor: str
    ts: str  # UTC, "YYYY-MM-DD HH:MM:SS.ffffff": how times are compared
    payload: dict[str, Any]


@dataclass(frozen=True)
class StateTable:
    """A table whose rows the ledger implies.

    `stored` turns a stored column into what the ledger records instead (a digest of a password
    hash, which the ledger must not reveal); `unchecked` are columns the ledger does not imply
    (said why beside each).
    """

    table: sa.Table
    key: tuple[str, ...]
    by_decision: bool = False
    stored: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    unchecked: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return str(self.table.name)  # a plain str: SQLAlchemy's subclass is no JSON key

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(str(c.name) for c in self.table.columns if c.name not in self.unchecked)


def sha256_text(value: Any) -> Any:
    return hashlib.sha256(value.encode()).hexdigest() if isinstance(value, str) else value


TABLES: dict[str, StateTable] = {
    str(t.table.name): t
    for t in (
        StateTable(s.decisions, ("id",), by_decision=True),
        StateTable(
            s.review_tasks,
            ("decision_id",),
            by_decision=True,
            stored={"callback_url": sha256_text},  # a URL may carry a secret: its digest
        ),
        StateTable(s.tool_executions, ("decision_id",), by_decision=True),
        StateTable(s.kill_switches, ("scope",)),
        StateTable(s.principals, ("id",)),
        StateTable(s.tokens, ("id",)),
        StateTable(s.users, ("username",), stored={"password_hash": sha256_text}),
        StateTable(s.policies, ("point", "version")),
        StateTable(s.model_versions, ("point", "version")),
        StateTable(s.model_aliases, ("point", "alias")),
        StateTable(s.rollouts, ("id",)),
        StateTable(s.monitor_alerts, ("id",)),
        StateTable(s.monitor_protections, ("point", "rule")),
    )
}

Key = tuple[Any, ...]


@dataclass
class Implied:
    """A row as the ledger implies it, and for each column the event that last set it."""

    values: dict[str, Any]
    origin: dict[str, int]


class Projection:
    """Rows implied so far, per table; a deleted row leaves the seq that deleted it."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[Key, Implied]] = {name: {} for name in TABLES}
        self.deleted: dict[str, dict[Key, int]] = {name: {} for name in TABLES}
        self.unreadable: list[tuple[int, str]] = []  # events whose payload did not fold

    def get(self, table: sa.Table, key: Key) -> dict[str, Any] | None:
        found = self.rows[table.name].get(key)
        return None if found is None else found.values

    def put(self, ev: Event, table: sa.Table, key: Key, values: dict[str, Any]) -> None:
        """The event makes the row (replacing any): key columns, then `values`."""
        spec = TABLES[table.name]
        row = dict(zip(spec.key, key, strict=True))
        row.update(values)
        self.rows[table.name][key] = Implied(row, dict.fromkeys(row, ev.seq))
        self.deleted[table.name].pop(key, None)

    def update(self, ev: Event, table: sa.Table, key: Key, values: dict[str, Any]) -> bool:
        """The event changes columns of the row, if the ledger made it; whether it did."""
        found = self.rows[table.name].get(key)
        if found is None:
            return False
        found.values.update(values)
        found.origin.update(dict.fromkeys(values, ev.seq))
        return True

    def delete(self, ev: Event, table: sa.Table, key: Key) -> None:
        if self.rows[table.name].pop(key, None) is not None:
            self.deleted[table.name][key] = ev.seq

    def where(self, table: sa.Table, **match: Any) -> list[tuple[Key, dict[str, Any]]]:
        """Rows of a small table whose columns equal `match` (e.g. the live policy of a point)."""
        return [
            (key, row.values)
            for key, row in self.rows[table.name].items()
            if all(row.values.get(k) == v for k, v in match.items())
        ]


Fold = Callable[[Projection, Event], None]
FOLDS: dict[str, list[Fold]] = {}


def fold(*types: str) -> Callable[[Fold], Fold]:
    """Register `fn` as what events of `types` imply."""

    def register(fn: Fold) -> Fold:
        for kind in types:
            FOLDS.setdefault(kind, []).append(fn)
        return fn

    return register


def apply(p: Projection, ev: Event) -> None:
    """Fold one event. One whose payload lacks what its type needs (written outside Warden,
    since the chain vouches for it) is noted rather than stopping the check."""
    for fn in FOLDS.get(ev.type, ()):
        try:
            fn(p, ev)
        except (KeyError, TypeError, AttributeError) as exc:
            p.unreadable.append((ev.seq, f"{ev.type} without {exc}"))


# -- decisions and review -------------------------------------------------------------------

DECIDED = (
    "route",
    "status",
    "outcome",
    "proposed_outcome",
    "confidence",
    "reasons",
    "policy_version",
    "model_version",
    "input",
    "context",
)
_TASK_OWN = ("decision_id", "point", "created_at", "submitted_by")


def decision_values(ev: Event) -> dict[str, Any]:
    """The decisions row a `decision.created` event implies (the key included)."""
    pl = ev.payload
    get = pl.get
    values = {name: get(name, UNKNOWN) for name in DECIDED}
    route = values["route"]
    values.update(
        id=ev.decision_id,
        point=ev.point,
        idempotency_key=pl.get("idempotency_key"),
        request_hash=pl.get("request_hash", UNKNOWN),
        actor=ev.actor,
        created_at=ev.ts,
        decided_at=None if route == "review" else ev.ts,
        ground_truth=None,
        ground_truth_at=None,
    )
    return values


DECISION_COLUMNS = (
    "id",
    "point",
    "route",
    "status",
    "outcome",
    "proposed_outcome",
    "confidence",
    "reasons",
    "policy_version",
    "model_version",
    "input",
    "context",
    "idempotency_key",
    "request_hash",
    "actor",
    "created_at",
    "decided_at",
    "ground_truth",
    "ground_truth_at",
)
assert TABLES["decisions"].columns == DECISION_COLUMNS, "update decided_row with the schema"


def decided_row(
    decision_id: str, point: str | None, actor: str, ts: str, pl: dict[str, Any]
) -> tuple[Any, ...]:
    """`decision_values` of an event routed without review, as a row in column order: what the
    check of a million decisions spends its time on, so built in one expression."""
    get = pl.get
    return (
        decision_id,
        point,
        get("route", UNKNOWN),
        get("status", UNKNOWN),
        get("outcome", UNKNOWN),
        get("proposed_outcome", UNKNOWN),
        get("confidence", UNKNOWN),
        get("reasons", UNKNOWN),
        get("policy_version", UNKNOWN),
        get("model_version", UNKNOWN),
        get("input", UNKNOWN),
        get("context", UNKNOWN),
        get("idempotency_key"),
        get("request_hash", UNKNOWN),
        actor,
        ts,
        ts,
        None,
        None,
    )


@fold("decision.created")
def decision_created(p: Projection, ev: Event) -> None:
    values = decision_values(ev)
    key = (ev.decision_id,)
    p.put(ev, s.decisions, key, values)
    if values["route"] != "review":
        return
    own = {"point": ev.point, "created_at": ev.ts, "submitted_by": ev.actor}
    task = ev.payload.get("review_task")
    if task is None:  # written before tasks were recorded: the task exists, its terms unknown
        rest = [c for c in TABLES["review_tasks"].columns if c not in _TASK_OWN]
        p.put(ev, s.review_tasks, key, {**own, **dict.fromkeys(rest, UNKNOWN)})
    else:
        p.put(ev, s.review_tasks, key, {**own, **task})


@fold("decision.outcome_received")
def outcome_received(p: Projection, ev: Event) -> None:
    values = {"ground_truth": ev.payload.get("ground_truth"), "ground_truth_at": ev.ts}
    p.update(ev, s.decisions, (ev.decision_id,), values)


@fold(
    "review.claimed",
    "review.released",
    "review.approved",
    "review.rejected",
    "review.overridden",
    "review.escalated",
    "review.expired",
)
def review_changed(p: Projection, ev: Event) -> None:
    """A review event carries the task columns it set (`task`) and, when it settled the
    decision, the reason appended (`settled`): the decision turns final with its outcome."""
    key = (ev.decision_id,)
    task = ev.payload.get("task")
    if task is None:  # written before review events recorded their values
        columns = [c for c in TABLES["review_tasks"].columns if c not in _TASK_OWN]
        p.update(ev, s.review_tasks, key, dict.fromkeys(columns, UNKNOWN))
        if ev.payload.get("final") or ev.type == "review.expired":
            unknown = dict.fromkeys(("status", "outcome", "decided_at", "reasons"), UNKNOWN)
            p.update(ev, s.decisions, key, unknown)
        return
    p.update(ev, s.review_tasks, key, task)
    settled = ev.payload.get("settled")
    decision = p.get(s.decisions, key)
    if settled is not None and decision is not None and decision["status"] == "pending":
        reasons = decision["reasons"]
        reasons = [*reasons, settled["reason"]] if isinstance(reasons, list) else UNKNOWN
        values = {
            "status": "final",
            "outcome": settled["outcome"],
            "decided_at": ev.ts,
            "reasons": reasons,
        }
        p.update(ev, s.decisions, key, values)


# -- kill switches, principals, tokens, users ------------------------------------------------


@fold("kill_switch.engaged", "kill_switch.released")
def kill_switch(p: Projection, ev: Event) -> None:
    values = {
        "engaged": ev.type == "kill_switch.engaged",
        "actor": ev.actor,
        "reason": ev.payload.get("reason"),
        "changed_at": ev.ts,
    }
    p.put(ev, s.kill_switches, (ev.payload["scope"],), values)


MIGRATED_BY = "migration:0009"  # who made the principals of credentials older than principals


@fold("principal.created")
def principal_created(p: Projection, ev: Event) -> None:
    pl = ev.payload
    key = (pl["principal_id"],)
    if p.get(s.principals, key) is not None:
        return  # two credentials for a new name at once: the first insert stands
    values = {
        "name": pl["name"],
        "kind": pl["kind"],
        "created_by": ev.actor,
        "created_at": ev.ts,
        "disabled_at": None,
    }
    p.put(ev, s.principals, key, values)


@fold("principal.disabled")
def principal_disabled(p: Projection, ev: Event) -> None:
    p.update(ev, s.principals, (ev.payload["principal_id"],), {"disabled_at": ev.ts})


def _owner(p: Projection, ev: Event, name: str) -> Any:
    """The principal a credential's event implies. An event without `principal_id` was written
    before principals existed: migration 0009 gave the credential the principal named after it
    (a person, created by `migration:0009` at a time the ledger does not record)."""
    pl = ev.payload
    if "principal_id" in pl:
        return pl["principal_id"] or None
    pid = principal_id_for(name)
    if p.get(s.principals, (pid,)) is None:
        values = {
            "name": name,
            "kind": "person",
            "created_by": MIGRATED_BY,
            "created_at": UNKNOWN,
            "disabled_at": None,
        }
        p.put(ev, s.principals, (pid,), values)
    return pid


@fold("token.created")
def token_created(p: Projection, ev: Event) -> None:
    """Events without `principal_id` predate expiry (migration 0009 added `expires_at` empty);
    without `groups`, reviewer groups (migration 0003 gave every token `[]`)."""
    pl = ev.payload
    # since tokens had principals or recorded their secret's hash, the event's time is the row's
    timed = "secret_hash" in pl or "principal_id" in pl
    values = {
        "name": pl["name"],
        "secret_hash": pl.get("secret_hash", UNKNOWN),
        "roles": pl.get("roles"),
        "points": pl.get("points"),
        "groups": pl.get("groups", []),
        "created_by": ev.actor,
        "created_at": ev.ts if timed else UNKNOWN,
        "revoked_at": None,
        "expires_at": pl["expires_at"] if "principal_id" in pl else None,
        "principal_id": _owner(p, ev, pl["name"]),
    }
    p.put(ev, s.tokens, (pl["token_id"],), values)


@fold("token.revoked")
def token_revoked(p: Projection, ev: Event) -> None:
    key = (ev.payload["token_id"],)
    row = p.get(s.tokens, key)
    if row is not None and row.get("revoked_at") is None:
        p.update(ev, s.tokens, key, {"revoked_at": ev.ts})


@fold("token.rotated")
def token_rotated(p: Projection, ev: Event) -> None:
    """The old token expires at the end of its overlap; the new one holds the same grants, made
    by the event's actor at its time (the new secret's hash is recorded since events carried
    `secret_hash`; before, that one column is unchecked)."""
    pl = ev.payload
    p.update(ev, s.tokens, (pl["token_id"],), {"expires_at": pl["old_expires_at"]})
    values = {
        "name": pl["name"],
        "secret_hash": pl.get("secret_hash", UNKNOWN),
        "roles": pl["roles"],
        "points": pl["points"],
        "groups": pl["groups"],
        "created_by": ev.actor,
        "created_at": ev.ts,
        "revoked_at": None,
        "principal_id": pl["principal_id"] or None,
        "expires_at": pl["expires_at"],
    }
    p.put(ev, s.tokens, (pl["new_token_id"],), values)


@fold("user.disabled")
def user_disabled(p: Projection, ev: Event) -> None:
    p.update(ev, s.users, (ev.payload["username"],), {"disabled_at": ev.ts})


@fold("user.created")
def user_created(p: Projection, ev: Event) -> None:
    pl = ev.payload
    recorded = "password_sha256" in pl
    values = {
        "password_hash": pl.get("password_sha256", UNKNOWN),
        "roles": pl.get("roles"),
        "points": pl.get("points"),
        "groups": pl.get("groups"),
        "created_by": ev.actor,
        "created_at": ev.ts if recorded else UNKNOWN,
        "disabled_at": None,
        "principal_id": _owner(p, ev, pl["username"]),
    }
    p.put(ev, s.users, (pl["username"],), values)


# -- agents' tool calls -----------------------------------------------------------------------


@fold("tool_call.executed")
def tool_call_executed(p: Projection, ev: Event) -> None:
    """The single-use claim of an approval: its row is written with this event (migration 0012
    wrote the rows of calls executed before the table existed)."""
    key = (ev.decision_id,)
    if p.get(s.tool_executions, key) is None:
        values = {"point": ev.point, "actor": ev.actor, "executed_at": ev.ts}
        p.put(ev, s.tool_executions, key, values)


# -- policies ---------------------------------------------------------------------------------


def _supersede_live(p: Projection, ev: Event, point: str | None) -> None:
    for key, _ in p.where(s.policies, point=point, status="live"):
        p.update(ev, s.policies, key, {"status": "superseded"})


@fold("policy.loaded")
def policy_loaded(p: Projection, ev: Event) -> None:
    pl = ev.payload
    key = (ev.point, pl["version"])
    if p.get(s.policies, key) is not None:
        return  # loaded again: the first load stands
    if pl.get("status") == "live":
        _supersede_live(p, ev, ev.point)
    values = {
        "owner": pl.get("owner"),
        "content": pl.get("content", UNKNOWN),
        "source": pl.get("source"),
        "loaded_by": ev.actor,
        "first_loaded_at": ev.ts,
        "status": pl.get("status", UNKNOWN),
        "approved_by": None,
        "approved_at": None,
    }
    p.put(ev, s.policies, key, values)


@fold("policy.approved")
def policy_approved(p: Projection, ev: Event) -> None:
    _supersede_live(p, ev, ev.point)
    values = {"status": "live", "approved_by": ev.actor, "approved_at": ev.ts}
    p.update(ev, s.policies, (ev.point, ev.payload["version"]), values)


# -- models and rollouts ----------------------------------------------------------------------


@fold("model.registered")
def model_registered(p: Projection, ev: Event) -> None:
    pl = ev.payload
    values = {
        "sha256": pl.get("sha256"),
        "registered_by": ev.actor,
        "registered_at": ev.ts,
        "metadata": pl.get("metadata"),
    }
    p.put(ev, s.model_versions, (ev.point, pl["version"]), values)


@fold("model.alias_moved")
def alias_moved(p: Projection, ev: Event) -> None:
    pl = ev.payload
    key = (ev.point, pl["alias"])
    if pl.get("to") is None:
        p.delete(ev, s.model_aliases, key)
        return
    reason = pl["reason"]
    if pl["alias"] == "champion" and "rollout" not in pl and str(reason).endswith(" promoted"):
        reason = UNKNOWN  # before promotions recorded their rollout, the row kept its reason
    values = {"version": pl["to"], "moved_by": ev.actor, "moved_at": ev.ts, "reason": reason}
    p.put(ev, s.model_aliases, key, values)


@fold("rollout.started")
def rollout_started(p: Projection, ev: Event) -> None:
    pl = ev.payload
    values = {
        "point": ev.point,
        "mode": pl.get("mode"),
        "champion": pl.get("champion"),
        "challenger": pl.get("challenger"),
        "plan": pl.get("plan"),
        "state": "running",
        "step": 0,
        "step_started_at": ev.ts,
        "started_by": ev.actor,
        "started_at": ev.ts,
        "updated_at": ev.ts,
        "reason": pl.get("reason", UNKNOWN),
    }
    p.put(ev, s.rollouts, (pl["rollout"],), values)


@fold(
    "rollout.paused",
    "rollout.resumed",
    "rollout.step",
    "rollout.promoted",
    "rollout.aborted",
    "rollout.rolled_back",
)
def rollout_moved(p: Projection, ev: Event) -> None:
    pl = ev.payload
    key = (pl["rollout"],)
    row = p.get(s.rollouts, key)
    if row is None:
        return
    values = {"state": pl["to"], "step": pl["step"], "updated_at": ev.ts, "reason": pl["reason"]}
    if pl["step"] != row["step"] or (pl["to"] == "running" and pl["from"] != "running"):
        values["step_started_at"] = ev.ts
    p.update(ev, s.rollouts, key, values)


# -- alerts and the protections they engage -------------------------------------------------

_ACTIVE_ALERT = ("pending", "firing")


@fold("alert.pending", "alert.firing", "alert.resolved")
def alert_changed(p: Projection, ev: Event) -> None:
    """As `warden.monitor.store._write_alert`: advance an active episode, or open one."""
    pl = ev.payload
    change = ev.type.removeprefix("alert.")
    values: dict[str, Any] = {"value": pl.get("value"), "updated_at": ev.ts}
    if change == "resolved":
        values.update(state="resolved", resolved_at=ev.ts, resolved_by=ev.actor)
    elif change == "firing":
        values.update(state="firing", fired_at=ev.ts)
    else:
        values.update(state=change)
    key = (pl["alert_id"],)
    row = p.get(s.monitor_alerts, key)
    if row is not None:
        if row["state"] in _ACTIVE_ALERT:
            p.update(ev, s.monitor_alerts, key, values)
        return
    if change == "resolved":
        return
    opened = {
        "point": ev.point,
        "rule": pl.get("rule"),
        "severity": pl.get("severity"),
        "metric": pl.get("metric"),
        "op": pl.get("op"),
        "threshold": pl.get("threshold"),
        "action": pl.get("action"),
        "started_at": ev.ts,
        "fired_at": None,
        "resolved_at": None,
        "resolved_by": None,
    }
    p.put(ev, s.monitor_alerts, key, {**opened, **values})


@fold("protection.engaged")
def protection_engaged(p: Projection, ev: Event) -> None:
    """Engaged only when its alert's firing was written (the alert event just before)."""
    pl = ev.payload
    alert = p.get(s.monitor_alerts, (pl["alert_id"],))
    if alert is None or alert.get("state") != "firing" or alert.get("fired_at") != ev.ts:
        return
    values = {"alert_id": pl["alert_id"], "reason": pl.get("reason"), "engaged_at": ev.ts}
    p.put(ev, s.monitor_protections, (ev.point, pl["rule"]), values)


@fold("protection.released")
def protection_released(p: Projection, ev: Event) -> None:
    for key, _ in p.where(s.monitor_protections, alert_id=ev.payload["alert_id"]):
        p.delete(ev, s.monitor_protections, key)
