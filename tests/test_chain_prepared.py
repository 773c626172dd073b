"""Sealing a prepared event (bytes and leaf-hash state made before the head lock) gives exactly
the body and hashes of the canonical definition: verification re-derives them from that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.ledger.canonical import NotCanonical, canonical_bytes
from warden.ledger.chain import (
    EventDraft,
    event_body,
    leaf_hash,
    next_chain_hash,
    prepare,
    seal,
    seal_prepared,
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_drafts = st.builds(
    EventDraft,
    type=st.text(min_size=1),
    actor=st.text(),
    payload=st.dictionaries(st.text(), _json, max_size=5),
    point=st.none() | st.text(),
    decision_id=st.none() | st.text(),
    ts=st.datetimes(
        min_value=datetime(1970, 1, 2),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))]),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    draft=_drafts,
    seq=st.integers(1, 2**63 - 1),
    prev=st.binary(min_size=32, max_size=32).map(bytes.hex),
)
def test_a_prepared_event_seals_to_the_canonical_body_and_hashes(
    draft: EventDraft, seq: int, prev: str
) -> None:
    body = event_body(seq, draft)
    sealed = seal_prepared(seq, prev, prepare(draft))
    assert sealed.body.encode() == body
    assert sealed.leaf_hash == leaf_hash(body).hex()
    assert sealed.chain_hash == next_chain_hash(prev, leaf_hash(body))
    assert sealed.prev_hash == prev and sealed.seq == seq
    assert seal(seq, prev, draft) == sealed


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(draft=_drafts, seqs=st.lists(st.integers(1, 10**12), min_size=2, max_size=4, unique=True))
def test_one_preparation_seals_at_any_place_in_the_chain(
    draft: EventDraft, seqs: list[int]
) -> None:
    """The leaf-hash state is copied, never consumed: a batch whose head moved is sealed again
    from the same preparation."""
    prepared = prepare(draft)
    for seq in seqs:
        assert seal_prepared(seq, "0" * 64, prepared).body.encode() == event_body(seq, draft)


def test_preparing_refuses_what_is_not_canonical() -> None:
    draft = EventDraft(type="t", actor="a", payload={"x": float("nan")})
    with pytest.raises(NotCanonical):
        prepare(draft)
    with pytest.raises(NotCanonical):
        canonical_bytes({"x": float("inf")})
