"""Which model answers a decision: the champion, or — in an active canary — the challenger.

The engine asks `select()` on the hot path, so it only reads in-memory state. That state is
rebuilt (models loaded from the registry) when the recorder reports that rollouts or aliases
changed in the database — on this replica or any other — and the next decision refreshes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from warden.models.guard import GuardedModel
from warden.policy.point import CompiledPoint
from warden.rollout.assignment import in_canary
from warden.rollout.registry import ARTIFACT_KINDS, Registry
from warden.rollout.rollouts import Mode, Rollout, Rollouts
from warden.store.recorder import GuardState

log = logging.getLogger(__name__)

GuardFactory = Callable[[CompiledPoint, Any], GuardedModel]


@dataclass(frozen=True)
class Selection:
    model: GuardedModel | None
    version: str | None
    variant: str | None = None  # the canary rollout id, when the challenger decides
    shadows: tuple[tuple[str, GuardedModel], ...] = ()  # (version, model) answering a copy


@dataclass(frozen=True)
class _PointState:
    champion_version: str | None
    champion: GuardedModel | None
    rollout: Rollout | None = None
    challenger: GuardedModel | None = None


class Deployments:
    def __init__(
        self,
        points: Mapping[str, CompiledPoint],
        file_models: Mapping[str, GuardedModel | None],
        registry: Registry,
        rollouts: Rollouts,
        guard: GuardFactory,
    ) -> None:
        self.points = points
        self.registry = registry
        self.rollouts = rollouts
        self._guard = guard
        self._loaded: dict[tuple[str, str], GuardedModel] = {}
        self._state: dict[str, _PointState] = {}
        for name, point in points.items():
            guarded = file_models.get(name)
            if guarded is not None and point.spec.model.version:
                self._loaded[(name, point.spec.model.version)] = guarded
            self._state[name] = _PointState(point.spec.model.version, guarded)
        self._seen: tuple[Any, Any] | None = None
        self._stale = True
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------

    def observe(self, guard: GuardState) -> None:
        """Called by the recorder after every commit; cheap: only notes a change."""
        seen = (guard.rollouts, guard.aliases)
        if seen != self._seen:
            self._seen = seen
            self._stale = True

    @property
    def stale(self) -> bool:
        """Whether the next selection must first re-read aliases and rollouts (`refresh`)."""
        return self._stale

    def refresh(self) -> None:
        """Re-read aliases and active rollouts; load any version not loaded yet."""
        with self._lock:
            self._stale = False
            active = {r.point: r for r in self.rollouts.active()}
            state: dict[str, _PointState] = {}
            for name, point in self.points.items():
                current = self._state[name]
                if point.spec.model.kind not in ARTIFACT_KINDS:
                    state[name] = current
                    continue
                champion_version = self.registry.aliases(name).get(
                    "champion", point.spec.model.version
                )
                champion = self._model(point, champion_version)
                rollout = active.get(name)
                challenger = self._model(point, rollout.challenger) if rollout else None
                if rollout is not None and challenger is None:
                    rollout = None
                state[name] = _PointState(champion_version, champion, rollout, challenger)
            self._state = state

    def _model(self, point: CompiledPoint, version: str | None) -> GuardedModel | None:
        if version is None:
            return None
        key = (point.name, version)
        if key not in self._loaded:
            try:
                self._loaded[key] = self._guard(point, self.registry.load(point, version))
            except Exception:
                log.exception(
                    "cannot load %s version %s; keeping the previous model", point.name, version
                )
                return self._state[point.name].champion
        return self._loaded[key]

    # -- the hot path --------------------------------------------------------------------

    def select(
        self,
        point: CompiledPoint,
        data: Mapping[str, Any],
        context: Mapping[str, Any],
        decision_id: str,
    ) -> Selection:
        if self._stale:
            self.refresh()
        state = self._state[point.name]
        rollout = state.rollout
        if rollout is None or state.challenger is None:
            return Selection(state.champion, state.champion_version)
        challenger = (rollout.challenger, state.challenger)
        if rollout.mode is Mode.SHADOW:
            share = rollout.plan.steps[rollout.step]
            key = _sticky_key(rollout, data, context) or decision_id
            shadows = (challenger,) if in_canary(key, share, rollout.id) else ()
            return Selection(state.champion, state.champion_version, shadows=shadows)
        key = _sticky_key(rollout, data, context) or decision_id
        if in_canary(key, rollout.percent, rollout.id):
            shadows = (
                () if state.champion is None else ((state.champion_version or "", state.champion),)
            )
            return Selection(
                state.challenger, rollout.challenger, variant=rollout.id, shadows=shadows
            )
        return Selection(state.champion, state.champion_version)

    def replace_file_model(
        self, name: str, point: CompiledPoint, model: GuardedModel | None
    ) -> None:
        """A new live policy brought another model block: decide with its model from now on."""
        with self._lock:
            if model is not None and point.spec.model.version:
                self._loaded[(name, point.spec.model.version)] = model
            self._state[name] = _PointState(point.spec.model.version, model)
            self._stale = True

    def challenger_breaker_open(self, point: str, version: str) -> bool:
        model = self._loaded.get((point, version))
        return model is not None and model.breaker.state.value == "open"

    def state(self, point: str) -> _PointState:
        if self._stale:
            self.refresh()
        return self._state[point]


def _sticky_key(
    rollout: Rollout, data: Mapping[str, Any], context: Mapping[str, Any]
) -> str | None:
    source, _, field = rollout.plan.sticky_key.partition(".")
    value = (data if source == "input" else context).get(field)
    return None if value is None else str(value)
