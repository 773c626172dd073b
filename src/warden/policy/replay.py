"""Replay: re-route recorded decisions under another policy, with the model outputs they had.

The model is not called again: the question replay answers is what the *policy* change does
to the same inputs and the same proposals — the effect of a threshold change before it goes
live.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import fastjsonschema

from warden.decision import Route
from warden.policy.point import CompiledPoint
from warden.policy.router import TIGHTEN_CODE, Failure, route, tighten

_FAILURE_KINDS = ("failure", "kill")


class _Reason(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def message(self) -> str: ...


class Recorded(Protocol):
    """What replay reads of a recorded decision (a `Decision`, or a lean row from the store)."""

    @property
    def id(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def policy_version(self) -> str: ...
    @property
    def input(self) -> dict[str, Any]: ...
    @property
    def context(self) -> dict[str, Any]: ...
    @property
    def proposed_outcome(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def reasons(self) -> Sequence[_Reason]: ...


@dataclass
class Transition:
    count: int = 0
    examples: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class ReplayResult:
    point: str
    old_versions: Counter[str]
    new_version: str
    total: int = 0
    transitions: dict[tuple[str, str], Transition] = field(default_factory=dict)
    before: Counter[str] = field(default_factory=Counter)
    after: Counter[str] = field(default_factory=Counter)
    new_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return sum(t.count for (a, b), t in self.transitions.items() if a != b)

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "new_policy_version": self.new_version,
            "replayed": self.total,
            "changed": self.changed,
            "old_policy_versions": dict(self.old_versions),
            "routes_before": dict(self.before),
            "routes_after": dict(self.after),
            "transitions": [
                {
                    "from": a,
                    "to": b,
                    "count": t.count,
                    "examples": t.examples,
                    "reasons": dict(t.reasons.most_common()),
                }
                for (a, b), t in sorted(self.transitions.items(), key=lambda kv: -kv[1].count)
            ],
            "reasons_after": dict(self.new_reasons.most_common()),
        }


def replay(
    point: CompiledPoint,
    decisions: Iterable[Recorded],
    *,
    examples: int = 3,
    progress: Callable[[int], None] | None = None,
    validated_under: Collection[str] = (),
) -> ReplayResult:
    """How each recorded decision would be routed by `point` (a new version of its policy).

    `validated_under` names old policy versions with this point's input schema (see
    `same_input_schema`): inputs they accepted are valid here too and are not checked again.
    """
    result = ReplayResult(point=point.name, old_versions=Counter(), new_version=point.version)
    trusted = frozenset(validated_under)
    for decision in decisions:
        new_route, codes = reroute(point, decision, validated=decision.policy_version in trusted)
        old_route = str(decision.route)
        result.total += 1
        result.old_versions[decision.policy_version] += 1
        result.before[old_route] += 1
        result.after[new_route] += 1
        result.new_reasons.update(codes)
        transition = result.transitions.setdefault((old_route, new_route), Transition())
        transition.count += 1
        transition.reasons.update(codes)
        if len(transition.examples) < examples:
            transition.examples.append(decision.id)
        if progress is not None:
            progress(1)
    return result


def same_input_schema(point: CompiledPoint, schemas: Mapping[str, Any]) -> frozenset[str]:
    """The policy versions, of `schemas` (version -> input schema), whose input schema is
    `point`'s: validation is deterministic, so what they accepted `point` accepts."""
    mine = point.spec.model_dump(mode="json")["input"]
    return frozenset(version for version, schema in schemas.items() if schema == mine)


def reroute(
    point: CompiledPoint, decision: Recorded, *, validated: bool = False
) -> tuple[str, list[str]]:
    """The route and reason codes `point` gives a recorded decision, with the model output it
    had, and with the failure, kill switch or protective alert that was in force then.
    `validated`: the input is known to satisfy `point`'s schema."""
    if any(r.code == "invalid_input" for r in decision.reasons):
        return Route.REFUSED.value, ["invalid_input"]
    if not validated:
        try:
            point.validate_input(decision.input)
        except fastjsonschema.JsonSchemaValueException:
            return Route.REFUSED.value, ["invalid_input"]
    failure = next(
        (
            Failure(r.code, r.message, kill=r.kind == "kill")
            for r in decision.reasons
            if r.kind in _FAILURE_KINDS and r.code != "rule_error"
        ),
        None,
    )
    routing = route(
        point,
        decision_id=decision.id,
        input=decision.input,
        context=decision.context,
        outcome=None if failure else decision.proposed_outcome,
        confidence=None if failure else decision.confidence,
        failure=failure,
    )
    protection = next((r for r in decision.reasons if r.code == TIGHTEN_CODE), None)
    if protection is not None:  # a protective alert was in force then; it would be again
        routing = tighten(routing, protection.message)
    return routing.route.value, [r.code for r in routing.reasons]
