"""The decision's JSON written straight from its fields is byte for byte pydantic's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.api.responses import decision_json, decisions_page_json
from warden.decision import Decision, Reason, Route, Status

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=5)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
reasons = st.builds(
    Reason,
    code=st.text(min_size=1),
    kind=st.sampled_from(["refuse", "review", "auto", "failure", "kill"]),
    message=st.text(),
    when=st.none() | st.text(),
    field=st.none() | st.text(),
)
decisions = st.builds(
    Decision,
    id=st.text(min_size=1),
    point=st.text(min_size=1),
    route=st.sampled_from(list(Route)),
    status=st.sampled_from(list(Status)),
    outcome=st.none() | st.text(),
    proposed_outcome=st.none() | st.text(),
    confidence=st.none() | st.floats(0, 1),
    reasons=st.lists(reasons, max_size=3),
    policy_version=st.text(),
    model_version=st.none() | st.text(),
    input=json_objects,
    context=json_objects,
    idempotency_key=st.none() | st.text(),
    actor=st.none() | st.text(),
    created_at=times,
    decided_at=st.none() | times,
    ground_truth=st.none() | st.text(),
    ground_truth_at=st.none() | times,
)


def _constructed(decision: Decision) -> Decision:
    """As the store builds one from a row: `model_construct`, no validation."""
    fields: dict[str, Any] = dict(decision.__dict__)
    fields["reasons"] = [Reason.model_construct(**r.__dict__) for r in decision.reasons]
    return Decision.model_construct(**fields)


@settings(max_examples=300, deadline=None)
@given(decisions)
def test_decision_json_is_pydantics_json(decision: Decision) -> None:
    expected = orjson.dumps(decision.model_dump(mode="json"))
    assert decision_json(decision) == expected
    assert decision_json(_constructed(decision)) == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(decisions, max_size=4), st.none() | st.text())
def test_a_page_is_pydantics_json(page: list[Decision], cursor: str | None) -> None:
    expected = orjson.dumps(
        {"data": [d.model_dump(mode="json") for d in page], "next_cursor": cursor}
    )
    assert decisions_page_json(page, cursor) == expected


def test_a_numpy_confidence_is_written_as_a_number() -> None:
    decision = Decision.model_construct(
        **{**_sample().__dict__, "confidence": np.float64(0.75)}  # a float subclass
    )
    assert orjson.loads(decision_json(decision))["confidence"] == 0.75


def test_what_json_cannot_hold_is_refused() -> None:
    decision = Decision.model_construct(**{**_sample().__dict__, "input": {"x": object()}})
    with pytest.raises(TypeError):
        decision_json(decision)


def _sample() -> Decision:
    return Decision(
        id="d1",
        point="p",
        route=Route.AUTO,
        status=Status.FINAL,
        outcome="approve",
        proposed_outcome="approve",
        confidence=0.9,
        reasons=[Reason(code="confident", kind="auto")],
        policy_version="v1",
        model_version="1",
        input={"a": 1},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
