"""route(): precedence, the fail-safe default, failures, kill switch and sampling."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import LOAN_POINT, write_points
from warden.decision import Route
from warden.policy.loader import load_point
from warden.policy.router import Failure, in_sample, route
from warden.policy.rules import CompiledRule, bind, binder_for, compile_rule

POINT = load_point(
    write_points(Path(__import__("tempfile").mkdtemp()), LOAN_POINT) / "loan_approval.yaml"
)


def _route(
    amount: float = 1000,
    country: str = "FR",
    outcome: str | None = "approve",
    confidence: float | None = 0.95,
    failure: Failure | None = None,
    decision_id: str = "d1",
) -> tuple[Route, list[str]]:
    data = {"amount": amount, "income": 5000, "credit_score": 700, "country": country}
    result = route(
        POINT,
        decision_id=decision_id,
        input=data,
        context={},
        outcome=outcome,
        confidence=confidence,
        failure=failure,
    )
    return result.route, [r.code for r in result.reasons]


def test_confident_small_amount_is_auto() -> None:
    assert _route() == (Route.AUTO, ["confident"])


def test_refuse_beats_review_and_auto() -> None:
    assert _route(amount=90000, country="XX") == (Route.REFUSED, ["blocked_country"])


def test_review_beats_auto_and_lists_every_reason() -> None:
    assert _route(amount=90000, confidence=0.5) == (
        Route.REVIEW,
        ["large_amount", "low_confidence"],
    )


def test_model_failure_follows_on_error_never_auto() -> None:
    route_, codes = _route(
        outcome=None, confidence=None, failure=Failure("model_timeout", "took too long")
    )
    assert (route_, codes) == (Route.REVIEW, ["model_timeout"])


def test_refusal_still_applies_when_the_model_failed() -> None:
    route_, _ = _route(
        country="XX", outcome=None, confidence=None, failure=Failure("model_error", "boom")
    )
    assert route_ is Route.REFUSED


def test_rule_that_cannot_be_evaluated_sends_to_review() -> None:
    # `country` is optional; a rule without has() would fail on inputs that omit it.
    data = {"amount": 10, "income": 1, "credit_score": 700}
    result = route(
        POINT,
        decision_id="x",
        input=data,
        context={},
        outcome="approve",
        confidence="high",
        failure=None,
    )  # type: ignore[arg-type]
    assert result.route is Route.REVIEW
    assert any(r.code == "rule_error" for r in result.reasons)


def test_sampling_is_deterministic_and_close_to_the_rate() -> None:
    ids = [f"id-{i}" for i in range(20000)]
    picked = [i for i in ids if in_sample(i, 0.05)]
    assert picked == [i for i in ids if in_sample(i, 0.05)]
    assert 0.04 < len(picked) / len(ids) < 0.06
    assert not any(in_sample(i, 0.0) for i in ids[:1000])


@settings(max_examples=300, deadline=None)
@given(
    amount=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    country=st.sampled_from(["FR", "XX", "DE"]),
    outcome=st.sampled_from(["approve", "decline"]),
    confidence=st.floats(min_value=0, max_value=1),
    failed=st.booleans(),
    decision_id=st.text(min_size=1, max_size=12),
)
def test_never_auto_when_a_human_or_refusal_rule_matches(
    amount: float,
    country: str,
    outcome: str,
    confidence: float,
    failed: bool,
    decision_id: str,
) -> None:
    failure = Failure("model_error", "x") if failed else None
    route_, codes = _route(
        amount,
        country,
        None if failed else outcome,
        None if failed else confidence,
        failure,
        decision_id,
    )
    must_not_auto = failed or country == "XX" or amount > 50000 or confidence < 0.85
    if must_not_auto:
        assert route_ is not Route.AUTO, codes
    if country == "XX":
        assert route_ is Route.REFUSED
    if route_ is Route.AUTO:
        assert codes == ["confident"]


# -- binding only what rules read ------------------------------------------------------------

RULES = [
    "input.amount > 50000",
    "has(input.country) && input.country in ['XX']",
    "input['credit_score'] < 600 || confidence < 0.5",
    "size(input) > 3",
    "'country' in input",
    "input.tags.exists(t, t == 'vip')",
    "context.channel == 'web' && output == 'approve'",
    "input.missing > 1",
    "[1, 2].exists(input, input > 1) && input.amount > 0",
    "input.nested.level >= 2",
]

values = st.one_of(st.integers(-5, 100_000), st.floats(-1e6, 1e6), st.text(max_size=3))
inputs = st.fixed_dictionaries(
    {"amount": st.floats(0, 1e6), "credit_score": st.integers(300, 850)},
    optional={
        "country": st.sampled_from(["XX", "FR"]),
        "tags": st.lists(st.sampled_from(["vip", "new"]), max_size=3),
        "nested": st.fixed_dictionaries({"level": st.integers(0, 5)}),
        "extra": values,
    },
)


def _evaluate(rule: CompiledRule, bound: object) -> object:
    try:
        return rule.matches(bound)
    except Exception:
        return "error"


@given(
    when=st.sampled_from(RULES),
    input=inputs,
    confidence=st.floats(0, 1),
    output=st.sampled_from(["approve", "decline"]),
    channel=st.sampled_from(["web", "branch"]),
)
@settings(max_examples=300, deadline=None)
def test_the_narrow_binding_evaluates_every_rule_as_the_full_one(
    when: str, input: dict[str, object], confidence: float, output: str, channel: str
) -> None:
    rule = compile_rule(
        "review", "r", when, None, input_fields=None, outcomes=["approve", "decline"]
    )
    context = {"channel": channel}
    full = bind(input, output, confidence, context)
    narrow = binder_for([rule]).bind(input, output, confidence, context)
    assert _evaluate(rule, narrow) == _evaluate(rule, full)


def test_the_binder_names_only_what_rules_read() -> None:
    assert POINT.binder.variables == {"input", "confidence"}
    assert POINT.binder.input_fields == {"amount", "country"}
    whole = compile_rule("auto", "w", "size(input) > 1", None, input_fields=None, outcomes=[])
    assert binder_for([whole]).input_fields is None
