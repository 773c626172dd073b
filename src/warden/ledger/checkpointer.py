"""Periodic checkpoints in the background of `warden serve`.

A checkpoint is made once WARDEN_CHECKPOINT_EVERY events (default 1000) have been added since the
last one, or WARDEN_CHECKPOINT_SECONDS (default 60) after the last one if anything was added at
all. Every replica may run one: checkpoints are keyed by size, so they never conflict. The
signing key is loaded (or created, for a ledger that never had one) only when the first
checkpoint is due.

With witnesses configured (WARDEN_WITNESSES), the unprotected tail is kept short: a checkpoint is
made as soon as anything was committed, looking every WARDEN_CHECKPOINT_POLL seconds (default
0.25, so at most four a second however fast decisions come), and each is handed to the
witnesses with its consistency proof.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from warden.ledger import identity, witness, witnessing
from warden.ledger.checkpoint import Checkpoint, head_size, latest, make_checkpoint
from warden.ledger.keys import SigningKey
from warden.ledger.lanecheckpoint import (
    LaneTrees,
    head_sizes,
    latest_sizes,
    make_lanes_checkpoint,
)
from warden.ledger.lanes import lane_count
from warden.ledger.tree import LedgerTree
from warden.ledger.witnessing import Submitter, WitnessTarget

log = logging.getLogger(__name__)

EVERY_ENV = "WARDEN_CHECKPOINT_EVERY"
SECONDS_ENV = "WARDEN_CHECKPOINT_SECONDS"
POLL_ENV = "WARDEN_CHECKPOINT_POLL"


class Checkpointer:
    def __init__(
        self,
        db: sa.Engine,
        home: Path,
        *,
        every: int = 1000,
        seconds: float = 60.0,
        witness_target: str | None = None,
        poll: float = 1.0,
        witnesses: list[WitnessTarget] | None = None,
    ) -> None:
        if every < 1 or seconds <= 0:
            raise ValueError("checkpoint interval must be at least 1 event and above 0 seconds")
        self.db = db
        self.home = home
        self.every = every
        self.seconds = seconds
        self.witness_target = witness_target
        self.poll = min(poll, seconds)
        self.tree = LedgerTree()
        self.lane_trees = LaneTrees()
        self.submitter = (
            Submitter(db, witnesses, self.tree, lane_trees=self.lane_trees) if witnesses else None
        )
        self.made = 0
        self._lanes = 0  # the ledger's lanes, read at the first tick
        self._key: SigningKey | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warden-checkpointer", daemon=True)

    @classmethod
    def from_env(cls, db: sa.Engine, home: Path) -> Checkpointer:
        """Configured by WARDEN_CHECKPOINT_EVERY, WARDEN_CHECKPOINT_SECONDS, WARDEN_WITNESS,
        WARDEN_WITNESSES and WARDEN_CHECKPOINT_POLL."""
        targets = witnessing.from_env()
        if targets:  # witnessed: sign whatever was committed, a few times a second at most
            return cls(
                db,
                home,
                every=1,
                seconds=float(os.environ.get(POLL_ENV, "0.25")),
                poll=float(os.environ.get(POLL_ENV, "0.25")),
                witness_target=witness.from_env(),
                witnesses=targets,
            )
        return cls(
            db,
            home,
            every=int(os.environ.get(EVERY_ENV, "1000")),
            seconds=float(os.environ.get(SECONDS_ENV, "60")),
            witness_target=witness.from_env(),
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def tick(self, now: float, last_at: float) -> Checkpoint | None:
        """Make a checkpoint if one is due; the newly made one, or None. With several lanes,
        a lanes checkpoint is signed too when any lane grew enough (lane 0's own checkpoint
        stays what witnesses cosign)."""
        made = self._lane_0_tick(now, last_at)
        if self._lanes == 0:
            with self.db.connect() as conn:
                self._lanes = lane_count(conn)
        if self._lanes > 1 and self._lanes_tick(now, last_at) and made is None:
            self.made += 1
        return made

    def _lanes_tick(self, now: float, last_at: float) -> bool:
        with self.db.connect() as conn:
            sizes = head_sizes(conn)
            signed = latest_sizes(conn) or [0] * len(sizes)
        grown = sum(max(0, a - b) for a, b in zip(sizes, signed, strict=False))
        if not grown or (grown < self.every and now - last_at < self.seconds):
            return False
        if self._key is None:
            self._key = identity.signing_key(self.db, self.home)
        try:
            made = make_lanes_checkpoint(self.db, self._key, self.lane_trees)
        except identity.KeyChanged:  # rotated by `warden audit rotate-key`: load the new key
            self._key = identity.signing_key(self.db, self.home)
            made = make_lanes_checkpoint(self.db, self._key, self.lane_trees)
        if self.submitter is not None:  # each lane above 0 to the witnesses, as lane 0
            self.submitter.submit_lanes(made)
        return True

    def _lane_0_tick(self, now: float, last_at: float) -> Checkpoint | None:
        with self.db.connect() as conn:
            size = head_size(conn)
            newest = latest(conn)
        signed = newest.size if newest else 0
        if size <= signed:
            return None
        if size - signed < self.every and now - last_at < self.seconds:
            return None
        if self._key is None:
            self._key = identity.signing_key(self.db, self.home)
        try:
            checkpoint = make_checkpoint(self.db, self._key, self.tree)
        except identity.KeyChanged:  # rotated by `warden audit rotate-key`: load the new key
            self._key = identity.signing_key(self.db, self.home)
            checkpoint = make_checkpoint(self.db, self._key, self.tree)
        self.made += 1
        if self.submitter is not None:
            self.submitter.submit(checkpoint)
        if self.witness_target:
            try:
                witness.push(checkpoint, self.witness_target)
            except witness.WitnessError as exc:
                log.warning("checkpoint %d stored but not witnessed: %s", checkpoint.size, exc)
        return checkpoint

    def _run(self) -> None:
        last_at = time.monotonic()
        while not self._stop.wait(self.poll):
            try:
                made = self.made
                self.tick(time.monotonic(), last_at)
                if self.made != made:
                    last_at = time.monotonic()
            except Exception:
                log.exception("periodic checkpoint failed; retrying in %.0fs", self.poll)


def start_checkpointer(
    db: sa.Engine,
    home: Path,
    *,
    every: int | None = None,
    seconds: float | None = None,
    witness_target: str | None = None,
    witnesses: list[WitnessTarget] | None = None,
    poll: float | None = None,
) -> Checkpointer:
    """Start the background checkpointer; arguments left out come from the environment."""
    configured = Checkpointer.from_env(db, home)
    checkpointer = Checkpointer(
        db,
        home,
        every=configured.every if every is None else every,
        seconds=configured.seconds if seconds is None else seconds,
        witness_target=witness_target or configured.witness_target,
        poll=configured.poll if poll is None else poll,
        witnesses=witnesses if witnesses is not None else witnessing.from_env(),
    )
    checkpointer.start()
    return checkpointer
