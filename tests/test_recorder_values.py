"""The writer's multi-row INSERT text: bound row by row, it must say exactly what binding the
whole statement at once says, for any values — quotes, backslashes, NULs refused alike."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import POSTGRES_ENV
from warden.store.recorder import _values

INSERT = "INSERT INTO t (a, b, c, d) VALUES (%s, %s, %s, %s)"
value = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(blacklist_characters="\x00")),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=20),
)
rows = st.lists(st.tuples(value, value, value, value), min_size=1, max_size=30)


@pytest.fixture(scope="module")
def literal() -> Iterator[Any]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        yield psycopg.ClientCursor(conn)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(1, 7))
def test_rows_bound_one_by_one_say_what_the_whole_statement_says(
    literal: Any, batch: list[tuple[Any, ...]], per_statement: int
) -> None:
    statements = _values(literal, INSERT, batch, per_statement)
    head, marks = INSERT.split(" VALUES ", 1)
    expected = []
    for start in range(0, len(batch), per_statement):
        chunk = batch[start : start + per_statement]
        text = f"{head} VALUES {', '.join([marks] * len(chunk))}"
        expected.append(literal.mogrify(text, [v for row in chunk for v in row]))
    assert statements == expected
