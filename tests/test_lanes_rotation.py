"""Key rotation for lanes checkpoints: an auditor holding the old key trusts a lanes checkpoint
signed by the rotated-in key, as for lane 0 — from the rotation event in lane 0 on, and only when
a checkpoint signed by a trusted key vouches for that event. The retired key signs no more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests import test_lanes
from tests.test_lanes import _decision_event, _fill
from warden.cli.app import app
from warden.ledger import identity
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.lanecheckpoint import lane_heads, make_lanes_checkpoint
from warden.ledger.lanes import sign_lanes
from warden.ledger.rotation import rotate
from warden.ledger.verify import BreakKind, snapshot, verify_ledger
from warden.store.recorder import Change, Recorder
from warden.store.schema import lane_checkpoints

pg_url = test_lanes.pg_url
lanes_db = test_lanes.lanes_db


def _grow(db: sa.Engine, points: dict[int, str]) -> None:
    recorder = Recorder(db)
    try:
        recorder.record(Change(events=[_decision_event(p, 300) for p in points.values()]))
    finally:
        recorder.close()


def _lanes_checkpoint_cli(db: sa.Engine, home: Path) -> None:
    env = {"WARDEN_HOME": str(home), "WARDEN_DB_URL": db.url.render_as_string(hide_password=False)}
    result = CliRunner().invoke(app, ["audit", "lanes-checkpoint"], env=env)
    assert result.exit_code == 0, result.output


def test_a_lanes_checkpoint_signed_by_a_rotated_in_key_is_trusted_through_the_rotation(
    lanes_db: sa.Engine, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    points = _fill(lanes_db)
    old = identity.signing_key(lanes_db, home)
    make_checkpoint(lanes_db, old)
    before = make_lanes_checkpoint(lanes_db, old)
    done = rotate(lanes_db, home, actor="test", reason="yearly rotation")
    _grow(lanes_db, points)
    _lanes_checkpoint_cli(lanes_db, home)  # signed by the new key only
    new = identity.signing_key(lanes_db, home)
    assert new.public.key_id == done.new.key_id != old.public.key_id

    report = verify_ledger(lanes_db, [old.public], projection=False, require_signed=True)
    assert report.ok, report.to_dict()["problems"]
    assert report.vouched_lanes is not None
    assert report.vouched_lanes.heads[1].size == before.heads[1].size + 1  # the new key's
    assert verify_ledger(lanes_db, [new.public], projection=False, require_signed=True).ok

    with pytest.raises(identity.KeyChanged):  # the retired key signs no more lanes checkpoints
        make_lanes_checkpoint(lanes_db, old)

    # the new key on a cut from before its rotation event: not vouched for by the rotation
    with snapshot(lanes_db) as conn:
        heads = lane_heads(conn)
    early = [*before.heads[:1], *heads[1:]]
    forged, _ = sign_lanes(before.origin, early, new.key)
    with lanes_db.begin() as conn:
        conn.execute(
            lane_checkpoints.insert().values(
                signed_at="2026-01-01T00:00:00Z", key_id=new.public.key_id, note=forged
            )
        )
    report = verify_ledger(lanes_db, [old.public], projection=False)
    assert [p.kind for p in report.problems] == [BreakKind.CHECKPOINT_MISMATCH]
    assert "is not signed by a trusted key" in report.problems[0].message


def test_after_a_lost_key_the_old_key_does_not_vouch_for_the_new_keys_lanes_checkpoints(
    lanes_db: sa.Engine, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    points = _fill(lanes_db)
    old = identity.signing_key(lanes_db, home)
    make_checkpoint(lanes_db, old)
    make_lanes_checkpoint(lanes_db, old)
    (home / "ledger-signing-key.pem").unlink()
    rotate(lanes_db, home, actor="test", reason="lost", lost=True)
    _grow(lanes_db, points)
    _lanes_checkpoint_cli(lanes_db, home)
    report = verify_ledger(lanes_db, [old.public], projection=False, require_signed=True)
    assert not report.ok
    assert any(
        p.kind is BreakKind.CHECKPOINT_MISMATCH and "not signed by a trusted key" in p.message
        for p in report.problems
    ), report.to_dict()["problems"]
    new = identity.signing_key(lanes_db, home)
    assert verify_ledger(
        lanes_db, [old.public, new.public], projection=False, require_signed=True
    ).ok
