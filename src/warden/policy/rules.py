"""CEL rules compiled once at load, with the static checks a policy author needs.

The `common-expression-language` package (a Rust CEL implementation) evaluates a compiled rule
in well under a microsecond once the variables are bound in a `cel.Context`; binding costs a few
microseconds per decision, so a decision binds once and evaluates all of its rules against it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import cel

VARIABLES = frozenset({"input", "output", "confidence", "context"})
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_INPUT_FIELD = re.compile(r"\binput\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(['\"])(.*?)\2\s*\])")
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_OUTPUT_EQ = re.compile(
    r"\boutput\s*(?:==|!=)\s*(['\"])(.*?)\1|(['\"])(.*?)\3\s*(?:==|!=)\s*output\b"
)
_OUTPUT_IN = re.compile(r"\boutput\s+in\s*\[(.*?)\]")


class RuleCompileError(ValueError):
    """A rule does not compile or refers to something that does not exist."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    kind: str
    id: str
    when: str
    reason: str | None
    program: Any

    def matches(self, bound: Any) -> bool:
        """True when the rule fires. Raises on evaluation errors; the router decides what they mean."""
        result = self.program.execute(bound)
        if not isinstance(result, bool):
            raise TypeError(f"rule '{self.id}' returned {type(result).__name__}, not a boolean")
        return result


def compile_rule(
    kind: str,
    rule_id: str,
    when: str,
    reason: str | None,
    *,
    input_fields: Collection[str] | None,
    outcomes: Collection[str],
) -> CompiledRule:
    """Compile and statically check one rule; raise RuleCompileError with a fix-it message."""
    try:
        program = cel.compile(when)
    except ValueError as exc:
        first = str(exc).split("\n| ")[0]
        raise RuleCompileError(f"rule '{rule_id}': CEL syntax error: {first}") from exc
    _check_variables(rule_id, when, program.variables())
    if input_fields is not None:
        _check_input_fields(rule_id, when, input_fields)
    _check_outcomes(rule_id, when, outcomes)
    return CompiledRule(kind=kind, id=rule_id, when=when, reason=reason, program=program)


def bind(
    input: dict[str, Any], output: str | None, confidence: float | None, context: dict[str, Any]
) -> Any:
    """Bind a decision's variables once, for evaluating all of its rules."""
    return cel.Context(
        {"input": input, "output": output, "confidence": confidence, "context": context}
    )


@dataclass(frozen=True, slots=True)
class Binder:
    """Binds only what a point's rules can read. Converting values into CEL is most of the cost
    of routing, and grows with the width of the input, while rules usually read a few fields.

    `input_fields` is None when some rule uses `input` other than by naming a field
    (`size(input)`, a macro over it...): then the whole input is bound. A rule that reads
    something left out fails to evaluate, and a rule error never lets AUTO through.
    """

    variables: frozenset[str]
    input_fields: frozenset[str] | None

    def bind(
        self,
        input: dict[str, Any],
        output: str | None,
        confidence: float | None,
        context: dict[str, Any],
    ) -> Any:
        names = self.variables
        values: dict[str, Any] = {}
        if "input" in names:
            fields = self.input_fields
            values["input"] = (
                input if fields is None else {k: v for k, v in input.items() if k in fields}
            )
        if "output" in names:
            values["output"] = output
        if "confidence" in names:
            values["confidence"] = confidence
        if "context" in names:
            values["context"] = context
        return cel.Context(values)


def binder_for(rules: Collection[CompiledRule]) -> Binder:
    """The narrowest binding that evaluates every one of `rules` exactly as the full one."""
    variables: set[str] = set()
    fields: set[str] | None = set()
    for rule in rules:
        names = set(rule.program.variables()) & VARIABLES
        variables |= names
        if "input" in names and fields is not None:
            named = _named_input_fields(rule.when)
            fields = None if named is None else fields | named
    return Binder(frozenset(variables), None if fields is None else frozenset(fields))


def _named_input_fields(when: str) -> set[str] | None:
    """The input fields a rule names, or None when it also uses `input` in any other way."""
    code = _STRING.sub(lambda m: m.group(0) if _is_index(when, m) else '""', when)
    named = [m.group(1) or m.group(3) for m in _INPUT_FIELD.finditer(code)]
    uses = len(re.findall(r"\binput\b", _STRING.sub('""', when)))
    return set(named) if uses == len(named) else None


def _check_variables(rule_id: str, when: str, names: list[str]) -> None:
    bound = set(_MACRO_VAR.findall(_STRING.sub('""', when)))
    unknown = sorted(set(names) - VARIABLES - bound)
    if unknown:
        raise RuleCompileError(
            f"rule '{rule_id}' uses unknown variable(s) {', '.join(unknown)}; "
            f"rules can use {', '.join(sorted(VARIABLES))}"
        )


def _check_input_fields(rule_id: str, when: str, input_fields: Collection[str]) -> None:
    code = _STRING.sub(lambda m: m.group(0) if _is_index(when, m) else '""', when)
    for match in _INPUT_FIELD.finditer(code):
        field = match.group(1) or match.group(3)
        if field not in input_fields:
            raise RuleCompileError(
                f"rule '{rule_id}' refers to input.{field}, which the input schema does not "
                f"declare; declared fields: {', '.join(sorted(input_fields)) or '(none)'}"
            )


def _is_index(text: str, match: re.Match[str]) -> bool:
    """Keep string literals used as `input["field"]` so the field check sees them."""
    before = text[: match.start()].rstrip()
    return before.endswith("[") and before[:-1].rstrip().endswith("input")


def _check_outcomes(rule_id: str, when: str, outcomes: Collection[str]) -> None:
    named = [m.group(2) if m.group(1) else m.group(4) for m in _OUTPUT_EQ.finditer(when)]
    for listed in _OUTPUT_IN.findall(when):
        named.extend(m.group(0)[1:-1] for m in _STRING.finditer(listed))
    for outcome in named:
        if outcome not in outcomes:
            raise RuleCompileError(
                f"rule '{rule_id}' compares output with '{outcome}', which is not one of the "
                f"outcomes {sorted(outcomes)}"
            )
