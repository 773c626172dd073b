"""route(): the decision authority. Precedence refuse > review > auto; nothing matched → review.

The router never returns AUTO when the model failed, the kill switch is on, a refuse or review
rule fired, a rule could not be evaluated, or the decision fell into the audit sample.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from warden.decision import Reason, Route
from warden.policy.point import CompiledPoint
from warden.policy.schema import REVIEW


@dataclass(frozen=True, slots=True)
class Routing:
    route: Route
    outcome: str | None
    reasons: list[Reason] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why no usable model output exists: a model failure or the kill switch."""

    code: str
    message: str
    kill: bool = False


def in_sample(decision_id: str, rate: float) -> bool:
    """Deterministic audit sample keyed by decision id: the same id always gets the same answer."""
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(b"warden-sample:" + decision_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def route(
    point: CompiledPoint,
    *,
    decision_id: str,
    input: dict[str, Any],
    context: dict[str, Any],
    outcome: str | None,
    confidence: float | None,
    failure: Failure | None = None,
) -> Routing:
    """Decide the route of one decision from its input, the model's output and the rules."""
    bound = point.binder.bind(input, outcome, confidence, context)
    reasons: list[Reason] = []
    refused = _fired(point, "refuse", bound, reasons, tolerate_errors=failure is not None)
    if refused:
        return Routing(Route.REFUSED, None, refused + reasons)
    if failure is not None:
        path = point.spec.failure.on_kill if failure.kill else point.spec.failure.on_error
        why = Reason(
            code=failure.code, kind="kill" if failure.kill else "failure", message=failure.message
        )
        if path == REVIEW:
            return Routing(Route.REVIEW, None, [why])
        return Routing(Route.FALLBACK, path, [why])
    review = _fired(point, "review", bound, reasons, tolerate_errors=False)
    if review or reasons:
        return Routing(Route.REVIEW, None, review + reasons)
    auto = _fired(point, "auto", bound, reasons, tolerate_errors=False)
    if reasons:
        return Routing(Route.REVIEW, None, reasons)
    if not auto:
        default = Reason(
            code="no_rule_matched",
            kind="default",
            message="no auto rule matched; review is the safe default",
        )
        return Routing(Route.REVIEW, None, [default])
    rate = point.spec.sampling.review_rate
    if in_sample(decision_id, rate):
        sample = Reason(
            code="audit_sample", kind="sample", message=f"selected for the {rate:.2%} audit sample"
        )
        return Routing(Route.REVIEW, None, [sample, *auto])
    return Routing(Route.AUTO, outcome, auto)


def _fired(
    point: CompiledPoint, kind: str, bound: Any, errors: list[Reason], *, tolerate_errors: bool
) -> list[Reason]:
    fired: list[Reason] = []
    for rule in point.rules:
        if rule.kind != kind:
            continue
        try:
            matched = rule.matches(bound)
        except Exception as exc:  # a rule that cannot be evaluated must never let AUTO through
            if not tolerate_errors:
                errors.append(
                    Reason(
                        code="rule_error",
                        kind="failure",
                        when=rule.when,
                        message=f"rule '{rule.id}' could not be evaluated: {exc}",
                    )
                )
            continue
        if matched:
            fired.append(Reason(code=rule.id, kind=kind, when=rule.when, message=rule.reason or ""))
    return fired


TIGHTEN_CODE = "alert_tighten"


def tighten(routing: Routing, why: str) -> Routing:
    """A protective alert in force: AUTO becomes REVIEW with the alert as the reason; every
    other route is already guarded."""
    if routing.route is not Route.AUTO:
        return routing
    reason = Reason(code=TIGHTEN_CODE, kind="review", message=why)
    return Routing(Route.REVIEW, None, [reason, *routing.reasons])
