"""The hot path's shortcuts give exactly what the general code they replace gives: a decision
read from its row (`to_decision`, built without `model_construct`) and the check of an input's
values (`_check_finite`, which passes plain values without a call)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warden import jsonlimits
from warden.api.responses import decision_json
from warden.decision import Decision, Reason, Route, Status
from warden.engine import _check_finite
from warden.errors import InvalidInput
from warden.store.queries import _utc, aware, to_decision

times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.none() | st.sampled_from([UTC, timezone(timedelta(hours=2))]),
)
texts = st.text(max_size=8)
stored_reasons = st.fixed_dictionaries(
    {"code": texts, "kind": texts},
    optional={"message": texts, "when": st.none() | texts, "field": st.none() | texts},
)
plain = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts
stored = (  # what a stored row holds: the engine let nothing else in
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    plain,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(texts | st.integers(0, 3), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=10,
)
rows = st.fixed_dictionaries(
    {
        "id": texts,
        "point": texts,
        "route": st.sampled_from([r.value for r in Route]),
        "status": st.sampled_from([s.value for s in Status]),
        "outcome": st.none() | texts,
        "proposed_outcome": st.none() | texts,
        "confidence": st.none() | st.floats(0, 1),
        "reasons": st.lists(stored_reasons, max_size=3),
        "policy_version": texts,
        "model_version": st.none() | texts,
        "input": st.dictionaries(texts, stored, max_size=3),
        "context": st.dictionaries(texts, stored, max_size=2),
        "idempotency_key": st.none() | texts,
        "actor": st.none() | texts,
        "created_at": times,
        "decided_at": st.none() | times,
        "ground_truth": st.none() | texts,
        "ground_truth_at": st.none() | times,
        "request_hash": st.none() | texts,  # a column that is not a field
    }
)


def _by_model_construct(m: dict[str, Any]) -> Decision:
    """What `to_decision` built before: pydantic's `model_construct`."""
    reasons = [
        Reason.model_construct(**{"when": None, "field": None, "message": "", **r})
        for r in m["reasons"]
    ]
    fields = {name: m[name] for name in Decision.model_fields if name != "reasons"}
    fields.update(
        route=Route(m["route"]),
        status=Status(m["status"]),
        created_at=_utc(m["created_at"]),
        decided_at=aware(m["decided_at"]),
        ground_truth_at=aware(m["ground_truth_at"]),
    )
    return Decision.model_construct(reasons=reasons, **fields)


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    assert list(a.__dict__) == list(b.__dict__)  # the JSON's key order
    assert a.model_fields_set == b.model_fields_set
    assert a.__pydantic_extra__ == b.__pydantic_extra__
    assert a.__pydantic_private__ == b.__pydantic_private__


@given(rows)
def test_a_decision_read_from_its_row_is_the_one_model_construct_builds(
    row: dict[str, Any],
) -> None:
    fast, reference = to_decision(row), _by_model_construct(row)
    assert fast == reference
    _same(fast, reference)
    for mine, theirs in zip(fast.reasons, reference.reasons, strict=True):
        _same(mine, theirs)
    assert decision_json(fast) == decision_json(reference)
    assert fast.model_dump() == reference.model_dump()


def _reference_check(value: Any, path: str, max_depth: int, level: int) -> None:
    """`_check_finite` before it passed plain values without a call."""
    if isinstance(value, dict | list | tuple) and level > max_depth:
        raise InvalidInput(jsonlimits.depth_message(path, max_depth), field=path)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{path} is {value}; numbers must be finite", field=path)
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise InvalidInput(f"{path} is outside the 64-bit integer range", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path} has a non-string key {key!r}", field=path)
            _reference_check(item, f"{path}.{key}", max_depth, level + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _reference_check(item, f"{path}[{index}]", max_depth, level + 1)
    elif value is not None and not isinstance(value, str | int | float):
        raise InvalidInput(
            f"{path} is a {type(value).__name__}; only JSON values (objects, arrays, strings, "
            "numbers, booleans, null) can be decided on and recorded",
            field=path,
        )


def _outcome(check: Any, value: Any, max_depth: int) -> tuple[str, str | None] | None:
    try:
        check(value, "input", max_depth, 1)
    except InvalidInput as error:
        return error.message, error.field
    return None


class _Odd:
    pass


@given(st.dictionaries(texts, values | st.builds(_Odd) | st.sets(st.integers())), st.integers(1, 4))
def test_the_value_check_refuses_exactly_what_it_refused(value: Any, max_depth: int) -> None:
    assert _outcome(_check_finite, value, max_depth) == _outcome(_reference_check, value, max_depth)


@pytest.mark.parametrize(
    "value",
    [
        {"a": math.nan},
        {"a": [1, math.inf]},
        {"a": 2**64},
        {"a": -(2**63) - 1},
        {"a": {1: "x"}},
        {"a": b"bytes"},
        {"a": [[[[1]]]]},
    ],
)
def test_the_value_check_still_refuses_each_kind_of_bad_value(value: Any) -> None:
    assert _outcome(_check_finite, value, 3) is not None
    assert _outcome(_check_finite, value, 3) == _outcome(_reference_check, value, 3)
