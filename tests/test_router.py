"""route(): precedence, the fail-safe default, failures, kill switch and sampling."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import LOAN_POINT, write_points
from warden.decision import Route
from warden.policy.loader import load_point
from warden.policy.router import Failure, in_sample, route

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
