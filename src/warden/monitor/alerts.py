"""Alert rules as a state machine: inactive -> pending -> firing -> resolved, and no data.

Prometheus semantics, evaluation for evaluation: a condition must hold for `for` (counted from
the first evaluation it held at) before the alert fires, and a firing alert stays firing until
`keep_firing_for` has passed since the first evaluation at which the condition no longer held,
so a flapping metric neither fires on every blip nor resolves on every dip. No data is its own
state, because a point whose metrics stopped arriving is not known to be healthy. The clock is
passed in, so tests control time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from warden.policy.monitoring import AlertRule

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class State(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    NO_DATA = "no_data"


class Change(StrEnum):
    """What happened to an alert; each becomes a ledger event `alert.<change>`."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    NO_DATA = "no_data"


@dataclass
class RuleState:
    """One rule's state at one point. `since` is when the current state began (epoch seconds)."""

    state: State = State.INACTIVE
    since: float = 0.0
    cleared_at: float | None = None  # first evaluation the condition failed, while firing
    alert_id: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class Transition:
    rule: AlertRule
    change: Change
    previous: State
    value: float | None
    at: float
    alert_id: str | None  # the episode this transition belongs to (set by the caller if None)
    by: str = "monitor"


def holds(rule: AlertRule, value: float) -> bool:
    return COMPARE[rule.op](value, rule.threshold)


def evaluate(
    rule: AlertRule, state: RuleState, value: float | None, now: float, new_id: Callable[[], str]
) -> list[Transition]:
    """Advance `state` with the latest value (None: no data) and return what changed."""
    state.value = value
    if value is None:
        if rule.no_data == "keep":
            return []
        if rule.no_data == "alert":
            return _no_data(rule, state, now, new_id)
        condition = False
    else:
        condition = holds(rule, value)
    changes: list[Transition] = []
    if state.state is State.NO_DATA:
        changes.append(_move(rule, state, State.INACTIVE, Change.RESOLVED, now, None))
    if state.state is State.INACTIVE:
        if condition:
            state.alert_id = new_id()
            if rule.for_ <= 0:
                changes.append(_move(rule, state, State.FIRING, Change.FIRING, now, value))
            else:
                changes.append(_move(rule, state, State.PENDING, Change.PENDING, now, value))
    elif state.state is State.PENDING:
        if not condition:
            changes.append(_move(rule, state, State.INACTIVE, Change.RESOLVED, now, value))
        elif now - state.since >= rule.for_:
            changes.append(_move(rule, state, State.FIRING, Change.FIRING, now, value))
    elif state.state is State.FIRING:
        if condition:
            state.cleared_at = None
        else:
            if state.cleared_at is None:
                state.cleared_at = now
            if now - state.cleared_at >= rule.keep_firing_for:
                changes.append(_move(rule, state, State.INACTIVE, Change.RESOLVED, now, value))
    return changes


def resolve_by_person(
    rule: AlertRule, state: RuleState, now: float, actor: str
) -> Transition | None:
    """A person closes the episode; if the condition still holds, a new episode starts later."""
    if state.state is State.INACTIVE:
        return None
    transition = _move(rule, state, State.INACTIVE, Change.RESOLVED, now, state.value)
    return Transition(
        rule,
        transition.change,
        transition.previous,
        transition.value,
        now,
        transition.alert_id,
        actor,
    )


def _no_data(
    rule: AlertRule, state: RuleState, now: float, new_id: Callable[[], str]
) -> list[Transition]:
    if state.state in (State.FIRING, State.NO_DATA):
        return []  # a firing alert is not resolved by silence
    changes = []
    if state.state is State.PENDING:
        changes.append(_move(rule, state, State.INACTIVE, Change.RESOLVED, now, None))
    state.alert_id = new_id()
    changes.append(_move(rule, state, State.NO_DATA, Change.NO_DATA, now, None))
    return changes


def _move(
    rule: AlertRule, state: RuleState, to: State, change: Change, now: float, value: float | None
) -> Transition:
    transition = Transition(rule, change, state.state, value, now, state.alert_id)
    state.state = to
    state.since = now
    state.cleared_at = None
    if to is State.INACTIVE:
        state.alert_id = None
    return transition
