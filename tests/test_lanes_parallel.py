"""Lanes verified in parallel: the lanes above 0 are checked in child processes that adopt the
parent's snapshot, and the report is the one a single process gives, for any tamper in any lane.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import test_lanes
from tests.test_lanes import LANES, _lane_rows, _tamper
from tests.test_lanes_signer import _write_lanes
from warden.ledger import verify as verify_mod
from warden.ledger.keys import load_or_create
from warden.ledger.lanecheckpoint import LaneTrees, make_lanes_checkpoint
from warden.ledger.verify import verify_ledger

pg_url = test_lanes.pg_url
lanes_db = test_lanes.lanes_db


def _summary(report: Any) -> Any:
    found = report.to_dict()
    return (
        found["ok"],
        [{k: v for k, v in p.items()} for p in found["problems"]],
        found.get("lanes"),
        found["root"],
        report.vouched_lanes.note.text() if report.vouched_lanes is not None else None,
    )


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.integers(2, 70), min_size=LANES, max_size=LANES),
    st.integers(1, LANES - 1),
    st.sampled_from(["none", "body", "delete", "rehash", "reorder"]),
    st.integers(0, 1),
    st.data(),
)
def test_lanes_verified_in_child_processes_give_the_report_one_process_gives(
    lanes_db: sa.Engine,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[int],
    lane: int,
    how: str,
    signed_before: int,
    data: st.DataObject,
) -> None:
    with lanes_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM lane_checkpoints"))
        conn.execute(sa.text("DELETE FROM lane_tiles"))
        conn.execute(sa.text("DELETE FROM ledger_tiles"))  # lane 0's, from an earlier example
        _write_lanes(conn, [["x"] * n for n in sizes])
    key = load_or_create(tmp_path_factory.mktemp("key"))
    if signed_before:
        make_lanes_checkpoint(lanes_db, key, LaneTrees())
    if how != "none":
        rows = _lane_rows(lanes_db, lane)
        _tamper(lanes_db, lane, rows, data.draw(st.integers(0, len(rows) - 2)), how)
    alone = verify_ledger(lanes_db, [key.public], projection=False, parallel=False)

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a lane above 0 was verified in the parent, not in a child")

    with monkeypatch.context() as patched:
        patched.setattr(verify_mod, "verify_lanes", not_here)
        shared = verify_ledger(lanes_db, [key.public], projection=False, parallel=True)
    assert _summary(shared) == _summary(alone)
    # a lane re-hashed before anything was signed is the unprotected tail: nothing can tell
    undetectable = how == "none" or (how == "rehash" and not signed_before)
    assert alone.ok == undetectable, alone.to_dict()["problems"]
