"""Witnesses of every lane: each lane above 0 is a log of its own (origin ORIGIN/lane/k), handed to
real C2SP witnesses with its consistency proof, its cosignatures kept per lane and demanded by
`warden audit verify --witness-key`. A witness that saw a lane before refuses a fork of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from tests import test_lanes
from tests.test_lanes import LANES, _decision_event, _fill, _lane_rows, _tamper
from tests.test_witness import Running
from warden.cli.app import app
from warden.ledger import identity, note, remembered
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.checkpointer import Checkpointer
from warden.ledger.cosigner import Witness
from warden.ledger.keys import SigningKey
from warden.ledger.lanecheckpoint import make_lanes_checkpoint
from warden.ledger.lanes import lane_origin
from warden.ledger.verify import BreakKind, verify_ledger
from warden.ledger.witnessing import Submitter
from warden.store.recorder import Change, Recorder
from warden.store.schema import lane_cosignatures

pg_url = test_lanes.pg_url
lanes_db = test_lanes.lanes_db
ORIGIN = "ledger.example.com/loans"


@pytest.fixture
def log(lanes_db: sa.Engine, tmp_path: Path) -> tuple[SigningKey, Path]:
    identity.ensure_origin(lanes_db, ORIGIN)
    home = tmp_path / "home"
    home.mkdir()
    return identity.signing_key(lanes_db, home), home


@pytest.fixture
def witnesses(tmp_path: Path, log: tuple[SigningKey, Path]) -> Iterator[list[Running]]:
    """Two witnesses that know every lane of the ledger as a log (its lane's verifier key)."""
    key, _ = log
    running = []
    for name in ("w1.example", "w2.example"):
        folder = tmp_path / name
        folder.mkdir()
        logs = [note.Verifier(lane_origin(ORIGIN, k), key.public.raw) for k in range(LANES)]
        witness = Witness(name, Ed25519PrivateKey.generate(), logs, folder / "witness.sqlite")
        running.append(Running(witness))
    yield running
    for one in running:
        one.stop()


def _grow(db: sa.Engine, points: dict[int, str], start: int) -> None:
    recorder = Recorder(db)
    try:
        for n in range(3):
            recorder.record(Change(events=[_decision_event(p, start + n) for p in points.values()]))
    finally:
        recorder.close()


def _env(db: sa.Engine, home: Path, targets: list[Running]) -> dict[str, str]:
    return {
        "WARDEN_HOME": str(home),
        "WARDEN_DB_URL": db.url.render_as_string(hide_password=False),
        "WARDEN_WITNESSES": ",".join(f"{w.url} {w.witness.verifier.vkey()}" for w in targets),
    }


def test_the_server_hands_every_lane_to_the_witnesses_and_verify_demands_their_cosignatures(
    lanes_db: sa.Engine, log: tuple[SigningKey, Path], witnesses: list[Running]
) -> None:
    key, home = log
    points = _fill(lanes_db)
    cosigners = [w.witness.verifier for w in witnesses]
    checkpointer = Checkpointer(
        lanes_db, home, every=1, seconds=60, witnesses=[w.target for w in witnesses]
    )
    checkpointer.tick(0.0, 0.0)
    _grow(lanes_db, points, 100)  # the second round needs consistency proofs in every lane
    checkpointer.tick(0.0, 0.0)
    with lanes_db.connect() as conn:
        rows = conn.execute(sa.select(lane_cosignatures.c.lane, lane_cosignatures.c.size)).all()
    assert sorted(set(rows)) == sorted({(k, s) for k in range(1, LANES) for s in (5, 8)})
    assert len(rows) == 2 * 2 * (LANES - 1)
    report = verify_ledger(
        lanes_db, [key.public], cosigners=cosigners, min_cosigners=2, projection=False
    )
    assert report.ok, report.to_dict()["problems"]
    assert report.lanes_cosigned == {k: 8 for k in range(1, LANES)}

    # through the CLI: each lane's verifier key for the witnesses, and verify's account
    runner = CliRunner()
    env = _env(lanes_db, home, witnesses)
    vkeys = runner.invoke(app, ["audit", "public-key", "--note"], env=env)
    assert vkeys.exit_code == 0, vkeys.output
    assert [line.split("+")[0] for line in vkeys.stdout.splitlines()] == [
        lane_origin(ORIGIN, k) for k in range(LANES)
    ]
    args = ["audit", "verify"]
    for w in witnesses:
        args += ["--witness-key", w.witness.verifier.vkey()]
    # (these test events have no state rows, so only the ledger's part of verify is asserted)
    shown = runner.invoke(app, [*args, "--min-witnesses", "2", "--json"], env=env)
    assert shown.stdout, shown.output
    printed = orjson.loads(shown.stdout)
    assert printed["problems"] == [] and printed["lanes_cosigned"] == {"1": 8, "2": 8, "3": 8}
    shown = runner.invoke(app, [*args, "--min-witnesses", "2"], env=env)
    assert "witnesses: lane 2 is cosigned at 8 (newest by w1.example at 8, w2.example at 8)" in (
        shown.output
    )

    # the cosignatures of one lane deleted from the database: verify names that lane
    with lanes_db.begin() as conn:
        conn.execute(lane_cosignatures.delete().where(lane_cosignatures.c.lane == 2))
    report = verify_ledger(
        lanes_db, [key.public], cosigners=cosigners, min_cosigners=1, projection=False
    )
    assert [(p.kind, p.lane) for p in report.problems] == [(BreakKind.UNVOUCHED, 2)]
    shown = runner.invoke(app, args, env=env)
    assert shown.exit_code == 1, shown.output
    assert "BROKEN at lane 2: unvouched" in shown.output
    assert "lane 2: no checkpoint of the lane is cosigned by 1 of the 2" in shown.output


def test_a_witness_that_saw_a_lane_refuses_a_fork_of_it(
    lanes_db: sa.Engine, log: tuple[SigningKey, Path], witnesses: list[Running]
) -> None:
    key, home = log
    points = _fill(lanes_db)
    targets = [w.target for w in witnesses]
    make_checkpoint(lanes_db, key)
    first = make_lanes_checkpoint(lanes_db, key)
    assert set(Submitter(lanes_db, targets).submit_lanes(first).values()) == {"cosigned"}

    # DBA + server: lane 2 rewritten and re-hashed, the signer's memory replaced, more events
    _tamper(lanes_db, 2, _lane_rows(lanes_db, 2), 1, "rehash")
    remembered.lanes_path_for(key).unlink()
    _grow(lanes_db, points, 200)
    result = CliRunner().invoke(
        app, ["audit", "lanes-checkpoint"], env=_env(lanes_db, home, witnesses)
    )
    assert result.exit_code == 1, result.output  # the forked lane was not cosigned
    outcomes = _outcomes(result.output)
    for w in ("w1.example", "w2.example"):
        assert outcomes[f"{w}, lane 1"] == outcomes[f"{w}, lane 3"] == "cosigned"
        assert outcomes[f"{w}, lane 2"].startswith("refused (422)"), outcomes
    printed = orjson.loads(result.stdout)
    assert [lane["size"] for lane in printed["lanes"]][1:] == [8, 8, 8]
    cosigners = [w.witness.verifier for w in witnesses]
    report = verify_ledger(
        lanes_db, [key.public], cosigners=cosigners, min_cosigners=1, projection=False
    )
    assert (BreakKind.UNVOUCHED, 2) in [(p.kind, p.lane) for p in report.problems]
    assert report.lanes_cosigned == {1: 8, 3: 8}


def _outcomes(output: str) -> dict[str, Any]:
    found = {}
    for line in output.splitlines():
        if line.startswith("witness "):
            name, _, outcome = line[len("witness ") :].partition(": ")
            found[name] = outcome
    return found
