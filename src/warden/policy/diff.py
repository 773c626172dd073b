"""What changed between two versions of a decision point: rules, outcomes, paths, schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warden.policy.schema import DecisionPointSpec


@dataclass(frozen=True)
class Change:
    section: str
    key: str
    kind: str  # added | removed | changed
    old: Any = None
    new: Any = None


def diff_specs(old: DecisionPointSpec, new: DecisionPointSpec) -> list[Change]:
    """Changes from `old` to `new`, rules matched by id so an edited threshold reads as one change."""
    changes: list[Change] = []
    for kind in ("refuse", "review", "auto"):
        before = {r.id: r for r in getattr(old.rules, kind)}
        after = {r.id: r for r in getattr(new.rules, kind)}
        for rule_id in before.keys() | after.keys():
            was, now = before.get(rule_id), after.get(rule_id)
            section = f"rules.{kind}"
            if was is None and now is not None:
                changes.append(Change(section, rule_id, "added", new=now.when))
            elif now is None and was is not None:
                changes.append(Change(section, rule_id, "removed", old=was.when))
            elif was is not None and now is not None and was != now:
                changes.append(Change(section, rule_id, "changed", old=was.when, new=now.when))
    old_fields = _flatten(old.model_dump(mode="json", exclude={"rules", "input"}))
    new_fields = _flatten(new.model_dump(mode="json", exclude={"rules", "input"}))
    for key in old_fields.keys() | new_fields.keys():
        a, b = old_fields.get(key, _MISSING), new_fields.get(key, _MISSING)
        if a != b:
            kind = "added" if a is _MISSING else "removed" if b is _MISSING else "changed"
            changes.append(
                Change(
                    key.split(".")[0],
                    key,
                    kind,
                    None if a is _MISSING else a,
                    None if b is _MISSING else b,
                )
            )
    old_props = old.input.get("properties", {}) or {}
    new_props = new.input.get("properties", {}) or {}
    for name in old_props.keys() | new_props.keys():
        a, b = old_props.get(name), new_props.get(name)
        if a != b:
            kind = "added" if a is None else "removed" if b is None else "changed"
            changes.append(Change("input", f"input.{name}", kind, a, b))
    if old.input.get("required") != new.input.get("required"):
        changes.append(
            Change(
                "input",
                "input.required",
                "changed",
                old.input.get("required"),
                new.input.get("required"),
            )
        )
    order = {"rules.refuse": 0, "rules.review": 1, "rules.auto": 2}
    return sorted(changes, key=lambda c: (order.get(c.section, 3), c.section, c.key))


_MISSING: Any = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}
