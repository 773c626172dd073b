"""The rollout controller: judge each running step and move it on, back, or to a person.

- a failing check rolls back at once (within the interval, not at its end);
- a tripped challenger breaker rolls back at once;
- at the end of the interval a passing step is promoted (the last step makes the challenger
  champion); no data or inconclusive evidence pauses the rollout for a person.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from warden.rollout.analysis import CheckResult, StepEvidence, Verdict, judge_step
from warden.rollout.evidence import collect
from warden.rollout.rollouts import Mode, Rollout, Rollouts, State

log = logging.getLogger(__name__)
ACTOR = "warden:rollout-controller"


@dataclass(frozen=True)
class Judgement:
    rollout: Rollout
    verdict: Verdict
    results: list[CheckResult]
    action: str  # wait | step | promote | rollback | pause

    def summary(self) -> str:
        return "; ".join(r.describe() for r in self.results)


class RolloutController:
    def __init__(
        self,
        db: sa.Engine,
        rollouts: Rollouts,
        breaker_open: Callable[[str, str], bool] = lambda point, version: False,
        evidence: Callable[[sa.Engine, Rollout], StepEvidence] = collect,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.rollouts = rollouts
        self.breaker_open = breaker_open
        self.evidence = evidence
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def judge(self, rollout: Rollout) -> Judgement:
        verdict, results = judge_step(rollout.plan, self.evidence(self.db, rollout))
        elapsed = (self.clock() - rollout.step_started_at).total_seconds()
        if self.breaker_open(rollout.point, rollout.challenger) or verdict is Verdict.FAIL:
            action = "rollback"
        elif elapsed < rollout.plan.interval:
            action = "wait"
        elif verdict is Verdict.PASS and rollout.mode is Mode.SHADOW:
            action = "pause"  # a shadow never decided anything: a person takes the next step
        elif verdict is Verdict.PASS:
            action = "promote" if rollout.step + 1 >= len(rollout.plan.steps) else "step"
        else:
            action = "pause"
        return Judgement(rollout, verdict, results, action)

    def tick(self) -> list[Judgement]:
        """Judge every running rollout once and act on it."""
        judged = []
        for rollout in self.rollouts.active():
            if rollout.state is not State.RUNNING:
                continue
            judgement = self.judge(rollout)
            self._act(judgement)
            judged.append(judgement)
        return judged

    def _act(self, judgement: Judgement) -> None:
        rollout, summary = judgement.rollout, judgement.summary()
        if judgement.action == "rollback":
            breaker = self.breaker_open(rollout.point, rollout.challenger)
            reason = "challenger circuit breaker open" if breaker else f"check failed: {summary}"
            self.rollouts.transition(
                rollout,
                state=State.ROLLED_BACK,
                actor=ACTOR,
                reason=reason,
                event="rollout.rolled_back",
            )
        elif judgement.action in ("step", "promote"):
            self.rollouts.advance(rollout, actor=ACTOR, reason=f"analysis passed: {summary}")
        elif judgement.action == "pause":
            if judgement.verdict is Verdict.PASS:
                reason = (
                    f"shadow analysis passed: {summary}; promote to make the challenger "
                    "champion, or abort and start a canary"
                )
            else:
                why = "no data" if judgement.verdict is Verdict.NO_DATA else "inconclusive"
                reason = f"{why}: {summary}; a person must resume, promote or abort"
            self.rollouts.transition(
                rollout, state=State.PAUSED, actor=ACTOR, reason=reason, event="rollout.paused"
            )

    def start(self, every: float = 5.0) -> None:
        """Tick in the background; safe with several replicas (transitions are conditional)."""

        def run() -> None:
            while not self._stop.wait(every):
                try:
                    self.tick()
                except Exception:
                    log.exception("rollout controller tick failed")

        self._thread = threading.Thread(target=run, name="warden-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class RolloutWorker:
    """The controller as a `warden serve` background worker (every WARDEN_ROLLOUT_TICK s)."""

    def __init__(self, engine: Any) -> None:
        self.controller = RolloutController(
            engine.db, engine.rollouts, breaker_open=engine.deployments.challenger_breaker_open
        )
        self.every = float(os.environ.get("WARDEN_ROLLOUT_TICK", "5"))

    def start(self) -> None:
        self.controller.start(self.every)

    def stop(self) -> None:
        self.controller.stop()
