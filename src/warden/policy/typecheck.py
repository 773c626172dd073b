"""Type checks of CEL rules against the input schema, at load rather than at the first decision.

CEL does not coerce: `input.amount > '500'` compiles, then fails on every decision where it is
reached (the router sends those to review), and `input.amount == '500'` is simply never true.
Two checks catch such rules while the author is still editing the file:

* a comparison of a declared input field with a literal of another JSON type, named precisely;
* a trial evaluation with values of the declared types: a CEL type error there means
  the operand types cannot work whatever the input. A rule is reported only when it fails the
  same way with numbers bound as integers and as doubles (JSON does not say which a caller
  sends), so a rule that works for some valid input is never rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cel

_LITERAL = (
    r"(?P<lit>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?u?"
    r"|true|false)"
)
_FIELD = r"\binput\s*\.\s*(?P<field>[A-Za-z_]\w*)"
_OP = r"\s*(?P<op>==|!=|<=|>=|<|>)\s*"
_FIELD_THEN_LITERAL = re.compile(_FIELD + _OP + _LITERAL + r"(?!\s*[.\[(\w])")
_LITERAL_THEN_FIELD = re.compile(r"(?<![\w.\])])" + _LITERAL + _OP + _FIELD + r"(?!\s*[.\[(])")
_TYPE_ERRORS = ("No such overload", "Unsupported operation", "Unsupported binary operator")
_SAMPLES: dict[str, tuple[Any, Any]] = {  # (with numbers as int, with numbers as double)
    "string": ("a", "a"),
    "boolean": (False, False),
    "integer": (1, 1),
    "number": (1, 1.5),
}


def field_types(schema: Mapping[str, Any]) -> dict[str, set[str]]:
    """The JSON types each top-level input field may have; fields with no stated type are left
    out (anything goes). An `enum` or `const` tells the type too."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    found: dict[str, set[str]] = {}
    for name, sub in properties.items():
        if not isinstance(sub, Mapping):
            continue
        kinds = sub.get("type")
        if isinstance(kinds, str):
            found[name] = {kinds}
        elif isinstance(kinds, list) and all(isinstance(k, str) for k in kinds):
            found[name] = set(kinds)
        elif isinstance(sub.get("enum"), list) and sub["enum"]:
            found[name] = {_json_type(v) for v in sub["enum"]}
        elif "const" in sub:
            found[name] = {_json_type(sub["const"])}
    return found


def check_rule_types(rule_id: str, when: str, types: Mapping[str, set[str]]) -> str | None:
    """A message saying why `when` cannot work with inputs of `types`, or None if it can."""
    for pattern in (_FIELD_THEN_LITERAL, _LITERAL_THEN_FIELD):
        for match in pattern.finditer(when):
            field, literal = match.group("field"), match.group("lit")
            declared = types.get(field)
            kind = _literal_type(literal)
            if declared is None or _compatible(kind, declared):
                continue
            expected = " or ".join(sorted(declared))
            hint = _hint(kind, literal, declared)
            return (
                f"rule '{rule_id}' compares input.{field} ({expected} in the input schema) with "
                f"the {kind} {literal}; CEL does not convert between types, so this "
                f"{'is never true' if match.group('op') in ('==', '!=') else 'fails'} on "
                f"every input. {hint}"
            )
    return _trial(rule_id, when, types)


def _trial(rule_id: str, when: str, types: Mapping[str, set[str]]) -> str | None:
    try:
        program = cel.compile(when)
    except ValueError:
        return None  # the syntax check reports it
    failures: list[str] = []
    for variant in (0, 1):
        values: dict[str, Any] = {}
        for name, kinds in types.items():
            concrete = kinds - {"null"}
            if len(concrete) == 1 and (kind := next(iter(concrete))) in _SAMPLES:
                values[name] = _SAMPLES[kind][variant]
        bound = cel.Context({"input": values, "output": "", "confidence": 0.5, "context": {}})
        try:
            program.execute(bound)
        except Exception as exc:  # the CEL runtime raises TypeError, ValueError, RuntimeError
            if not is_type_error(exc):
                return None
            failures.append(str(exc).split(". ")[0])
        else:
            return None
    return (
        f"rule '{rule_id}' applies an operator to values of types it does not accept, given the "
        f"types of the input schema ({failures[0]}); CEL does not convert between types: "
        "compare like with like, or convert explicitly with int(), double() or string()"
    )


def is_type_error(exc: Exception) -> bool:
    """Whether CEL failed because the operand types do not fit, whatever their values."""
    return any(marker in str(exc) for marker in _TYPE_ERRORS)


def _literal_type(literal: str) -> str:
    if literal[0] in "'\"":
        return "string"
    if literal in ("true", "false"):
        return "boolean"
    return "number"


def _compatible(kind: str, declared: set[str]) -> bool:
    if kind == "number":
        return bool(declared & {"number", "integer"})
    return kind in declared


def _hint(kind: str, literal: str, declared: set[str]) -> str:
    if kind == "string" and declared & {"number", "integer"}:
        bare = literal[1:-1]
        return f"Write the number without quotes: {bare}" if _is_number(bare) else ""
    if kind == "number" and "string" in declared:
        return f"Quote it if the field holds text: '{literal}'"
    return "Compare with a value of the declared type."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"
