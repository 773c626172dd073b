"""The alert state machine under a controlled clock: for, keep_firing_for, flapping, no data."""

from __future__ import annotations

import itertools
from typing import Any

from warden.monitor.alerts import Change, RuleState, State, evaluate, resolve_by_person
from warden.policy.monitoring import AlertRule

ids = (f"a{i}" for i in itertools.count())


def _rule(**overrides: Any) -> AlertRule:
    values: dict[str, Any] = {
        "id": "review_surge",
        "metric": "review_rate",
        "op": ">",
        "threshold": 0.5,
        "for": "60s",
    }
    return AlertRule.model_validate({**values, **overrides})


def _run(rule: AlertRule, steps: list[tuple[float, float | None]]) -> list[tuple[float, str]]:
    state = RuleState()
    seen = []
    for now, value in steps:
        for t in evaluate(rule, state, value, now, lambda: next(ids)):
            seen.append((now, t.change.value))
    return seen


def test_pending_then_firing_after_for_then_resolved() -> None:
    rule = _rule()
    assert _run(rule, [(0, 0.1), (10, 0.7), (40, 0.8), (70, 0.9), (100, 0.2)]) == [
        (10, "pending"),
        (70, "firing"),
        (100, "resolved"),
    ]


def test_an_episode_keeps_one_id_from_pending_to_resolved() -> None:
    rule = _rule()
    state = RuleState()
    changes = []
    for now, value in [(0, 0.9), (60, 0.9), (61, 0.1)]:
        changes += evaluate(rule, state, value, now, lambda: next(ids))
    assert [c.change for c in changes] == [Change.PENDING, Change.FIRING, Change.RESOLVED]
    assert len({c.alert_id for c in changes}) == 1 and changes[0].alert_id is not None
    assert state.state is State.INACTIVE and state.alert_id is None


def test_flapping_shorter_than_for_never_fires() -> None:
    rule = _rule()
    steps = [(t, 0.9 if (t // 30) % 2 == 0 else 0.1) for t in range(0, 600, 10)]
    changes = {change for _, change in _run(rule, steps)}
    assert "firing" not in changes
    assert changes == {"pending", "resolved"}


def test_keep_firing_for_rides_out_short_dips() -> None:
    """As Prometheus: counted from the first evaluation at which the condition no longer held."""
    rule = _rule(**{"for": 0, "keep_firing_for": "120s"})
    steps = [(0, 0.9), (30, 0.1), (60, 0.9), (90, 0.1), (170, 0.1), (209, 0.1), (210, 0.1)]
    assert _run(rule, steps) == [(0, "firing"), (210, "resolved")]


def test_no_data_is_its_own_state_and_does_not_resolve_a_firing_alert() -> None:
    rule = _rule(**{"for": 0})
    assert _run(rule, [(0, None), (10, None), (20, 0.1)]) == [(0, "no_data"), (20, "resolved")]
    assert _run(rule, [(0, 0.1), (10, 0.9), (20, None), (30, None), (40, 0.1)]) == [
        (10, "firing"),
        (40, "resolved"),
    ]


def test_no_data_while_pending_drops_the_pending_episode() -> None:
    assert _run(_rule(), [(0, 0.9), (30, None)]) == [
        (0, "pending"),
        (30, "resolved"),
        (30, "no_data"),
    ]


def test_no_data_ok_and_keep() -> None:
    assert _run(_rule(no_data="ok"), [(0, None), (10, None)]) == []
    ok_firing = _rule(no_data="ok", **{"for": 0})
    assert _run(ok_firing, [(0, 0.9), (10, None)]) == [(0, "firing"), (10, "resolved")]
    keep = _rule(no_data="keep", **{"for": 0})
    assert _run(keep, [(0, 0.9), (10, None), (20, None)]) == [(0, "firing")]


def test_comparisons() -> None:
    for op, value, fires in [
        (">", 0.5, False),
        (">=", 0.5, True),
        ("<", 0.4, True),
        ("<=", 0.6, False),
    ]:
        rule = _rule(op=op, **{"for": 0})
        assert bool(_run(rule, [(0, value)])) is fires, op


def test_a_person_resolves_and_a_held_condition_starts_a_new_episode() -> None:
    rule = _rule(**{"for": 0})
    state = RuleState()
    first = evaluate(rule, state, 0.9, 0, lambda: "first")
    assert [c.change for c in first] == [Change.FIRING]
    closed = resolve_by_person(rule, state, 5, "alice")
    assert closed is not None and closed.by == "alice" and closed.alert_id == "first"
    again = evaluate(rule, state, 0.9, 10, lambda: "second")
    assert [(c.change, c.alert_id) for c in again] == [(Change.FIRING, "second")]
    assert resolve_by_person(rule, RuleState(), 0, "alice") is None
