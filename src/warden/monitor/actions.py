"""Protective actions: what Warden does, not only says, when an alert fires.

`tighten` routes every would-be AUTO decision of the point to review until a person resolves the
alert; `kill` engages the point's kill switch (released with `warden resume`); `notify` only tells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warden.decision import Reason, Route
from warden.policy.router import Routing

if TYPE_CHECKING:
    from warden.engine import Engine
    from warden.policy.monitoring import AlertRule

TIGHTEN_CODE = "alert_tighten"


def tighten(routing: Routing, why: str) -> Routing:
    """AUTO becomes REVIEW with the alert as the reason; every other route is already guarded."""
    if routing.route is not Route.AUTO:
        return routing
    reason = Reason(code=TIGHTEN_CODE, kind="review", message=why)
    return Routing(Route.REVIEW, None, [reason, *routing.reasons])


def describe(point: str, rule: AlertRule, value: float | None) -> str:
    shown = "no data" if value is None else f"{value:.4g}"
    return f"alert '{rule.id}' on {point}: {rule.metric} = {shown} {rule.op} {rule.threshold:g}" + (
        f" (held {rule.for_:g}s)" if rule.for_ else ""
    )


def kill(engine: Engine, point: str, rule: AlertRule, value: float | None) -> None:
    """Engage the point's kill switch through the engine, so it is recorded like a person's."""
    if point in {k.scope for k in engine.kill_switches() if k.engaged}:
        return
    engine.set_kill(
        point,
        True,
        actor=f"monitor:alert:{rule.id}",
        reason=describe(point, rule, value) + "; release with `warden resume` once checked",
    )
