"""Protective actions: what Warden does, not only says, when an alert fires.

`tighten` routes every would-be AUTO decision of the point to review until a person resolves the
alert; `kill` engages the point's kill switch (released with `warden resume`); `notify` only tells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warden.engine import Engine
    from warden.policy.monitoring import AlertRule


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
