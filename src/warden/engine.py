"""The governed decision flow — the only place that sequences the parts.

validate input → kill switch → model (timeout, breaker) → validate output → route → record.
Every decision is recorded with its ledger event in one transaction before it is returned.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastjsonschema
import sqlalchemy as sa

from warden import flow, jsonlimits
from warden.decision import Decision, Reason, Route, Status
from warden.errors import (
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    PointUnavailable,
    PolicyError,
    Unavailable,
    WardenError,
)
from warden.flow import Blocking, CallModel, Commit, Flow
from warden.heap import collector_paused
from warden.idempotency import RecentKeys
from warden.ids import new_id
from warden.ledger.canonical import NotCanonical, canonical_bytes
from warden.ledger.chain import EventDraft
from warden.models.base import Model, ModelFailure, ModelLoadError, Prediction
from warden.models.guard import GuardedModel, check_prediction
from warden.models.loader import load_model
from warden.monitor.metrics import WRITES_REFUSED
from warden.monitor.observer import Observer, observe
from warden.policy.loader import BrokenPoint, model_error, report_broken
from warden.policy.point import CompiledPoint
from warden.policy.router import Failure, Routing, route, tighten
from warden.policy.schema import ModelKind
from warden.policy.versions import PolicyVersion, PolicyVersions
from warden.review.tasks import check_callback_url, new_task_row, task_payload
from warden.rollout.deployment import Deployments, Selection
from warden.rollout.registry import Registry
from warden.rollout.rollouts import Rollouts
from warden.rollout.shadow import ShadowCall, ShadowRunner
from warden.rollout.shadow_host import HostAddress
from warden.store import queries
from warden.store.recorder import (
    GLOBAL_SCOPE,
    LINGER,
    MAX_QUEUE,
    MAX_RIDERS,
    Change,
    DuplicateKey,
    GuardState,
    Recorder,
    is_killed,
)
from warden.store.schema import decisions, kill_switches, review_tasks

KILL_REASON = "kill switch engaged"
REVOKED = {
    "kill_switch": KILL_REASON,
    "rollout_stopped": "the canary that chose this model stopped before the decision was recorded",
}
MAX_IN_FLIGHT = 1024  # decisions being made at once before more are refused (503)
# Enough model workers for every concurrent caller (the HTTP server runs up to 40 at once), so
# only a model that hangs — not ordinary load — exhausts them and fails fast.
MODEL_WORKERS = 64


@dataclass(frozen=True, slots=True)
class Proposal:
    """The AI's output submitted by the caller (proposal mode: agents, external serving)."""

    outcome: Any
    confidence: Any
    model_version: str | None = None


@dataclass(slots=True)
class _Answer:
    """What answered a decision: the model's prediction or failure, and which model."""

    prediction: Prediction | None
    failure: Failure | None
    version: str | None
    selection: Selection | None


@dataclass(slots=True)
class _Pending:
    """A decision routed and ready to commit, and what its commit is followed by."""

    compiled: CompiledPoint
    row: dict[str, Any]
    change: Change
    data: dict[str, Any]
    answer: _Answer
    marks: tuple[int, ...] = ()


class Engine:
    """Runs decisions for a set of loaded decision points against one database."""

    def __init__(
        self,
        points: Mapping[str, CompiledPoint],
        db: sa.Engine,
        *,
        actor: str = "system",
        model_cache: Path | None = None,
        shadow_process: bool = False,
        shadow_host: HostAddress | None = None,
        broken: Sequence[BrokenPoint] = (),
        write_queue: int = MAX_QUEUE,
        shadow_backlog: int = MAX_RIDERS,
        max_in_flight: int = MAX_IN_FLIGHT,
        writer_linger: float = LINGER,
    ) -> None:
        """`shadow_process`: shadow models answer in a child process rather than on a thread
        of this one (see `warden.rollout.shadow_process`); the server turns it on.
        `shadow_host`: that process is the host's shared one (`warden.rollout.shadow_host`).

        `broken`: point files that did not load (see `load_available`). A point whose model
        does not load joins them; the others serve, and deciding on a broken one says why.

        `write_queue`: changes that may wait for the writer before decisions are refused with
        `Unavailable` (503); `shadow_backlog`: shadow results that may wait to be written
        before more are dropped (counted, never a decision); `max_in_flight`: decisions being
        made at once before more are refused with `Unavailable` — under overload a caller is
        told at once to come back, instead of waiting in an ever longer line. `writer_linger`:
        seconds the writer keeps gathering a batch while changes keep arriving that close
        together (docs/scaling.md)."""
        self.db = db
        self.shadow_process = shadow_process
        self.shadow_host = shadow_host
        self.max_json_depth = jsonlimits.max_depth_from_env()  # of an input or a context
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._flight_lock = threading.Lock()
        self._keys = RecentKeys()
        self._killed: frozenset[str] = frozenset()
        self._kill_lock = threading.Lock()
        self._policy_lock = threading.Lock()
        self._live_policies: frozenset[tuple[str, str]] | None = None
        self._policies_stale = False
        # Monitoring hooks, wired by warden.monitor.observer.attach: observers see each recorded
        # decision; `tightened` maps a point to the alert that sends all its decisions to review.
        self.observers: list[Observer] = []
        self.tightened: dict[str, str] = {}
        self.recorder = Recorder(
            db,
            on_guard_state=self._on_guard_state,
            max_queue=write_queue,
            max_riders=shadow_backlog,
            linger=writer_linger,
        )
        self.policies = PolicyVersions(db, self.recorder)
        self.broken: dict[str, BrokenPoint] = {}
        self.unnamed_broken: list[BrokenPoint] = []
        for item in broken:
            if item.name is None or item.name in points:
                self.unnamed_broken.append(item)
            else:
                self.broken[item.name] = item
        try:
            self.points = self.policies.register(dict(points), actor)
            self.models: dict[str, GuardedModel | None] = {}
            for name, point in list(self.points.items()):
                try:
                    self.models[name] = _load_guarded(point)
                except PolicyError as exc:
                    self.broken[name] = BrokenPoint(name, exc, point.spec)
                    report_broken(self.broken[name])
                    del self.points[name]
        except BaseException:
            self.recorder.close()  # a point that cannot start leaves no writer behind
            raise
        cache = model_cache or Path(tempfile.gettempdir()) / "warden-models"
        self.registry = Registry(db, self.recorder, cache)
        self.rollouts = Rollouts(db, self.recorder, self.registry)
        self.deployments = Deployments(
            self.points, self.models, self.registry, self.rollouts, _guard
        )
        self._shadow: ShadowRunner | None = None
        self._refresh_kill_state()

    # -- decisions -----------------------------------------------------------------------

    def decide(
        self,
        point: str,
        input: Any,
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        actor: str = "anonymous",
        proposal: Proposal | None = None,
        callback_url: str | None = None,
    ) -> Decision:
        """Run one governed decision. Raises WardenError for requests that cannot be decided.

        `callback_url` receives the decision as a signed webhook if it goes to review and
        becomes final later.
        """
        with self._in_flight_place():
            return flow.run(
                self.decision_flow(
                    point,
                    input,
                    context=context,
                    idempotency_key=idempotency_key,
                    actor=actor,
                    proposal=proposal,
                    callback_url=callback_url,
                )
            )

    async def decide_async(
        self,
        point: str,
        input: Any,
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        actor: str = "anonymous",
        proposal: Proposal | None = None,
        callback_url: str | None = None,
        follow: Callable[[Change, GuardState], Change | None] | None = None,
    ) -> Decision:
        """`decide` on an asyncio event loop: the same flow, awaiting the model and the commit
        instead of blocking a thread on them (the HTTP server decides this way).

        `follow` rides on the decision's change (see `Change.follow`): what the decision
        authorises, committed in its transaction if the writer finds it still may."""
        with self._in_flight_place():
            return await flow.run_async(
                self.decision_flow(
                    point,
                    input,
                    context=context,
                    idempotency_key=idempotency_key,
                    actor=actor,
                    proposal=proposal,
                    callback_url=callback_url,
                    follow=follow,
                )
            )

    @contextmanager
    def _in_flight_place(self) -> Iterator[None]:
        """A place among the decisions in flight for the block, or `Unavailable` at once when
        none is free."""
        self._admit()
        try:
            yield
        finally:
            self._leave()

    def _admit(self) -> None:
        with self._flight_lock:
            if self._in_flight >= self.max_in_flight:
                WRITES_REFUSED.labels("at_capacity").inc()
                raise self.capacity_error()
            self._in_flight += 1

    @property
    def at_capacity(self) -> bool:
        """Whether every place for a decision in flight is taken: a request to decide would be
        refused now. Read without the lock, so a caller may act on a value one decision old;
        `decide` and `decide_async` still admit under it."""
        return self._in_flight >= self.max_in_flight

    def capacity_error(self) -> Unavailable:
        """What a decision refused for want of a place in flight is told."""
        return Unavailable(
            f"Warden is at capacity ({self.max_in_flight} decisions in flight); "
            "nothing was recorded, retry after a moment"
        )

    def _leave(self) -> None:
        with self._flight_lock:
            self._in_flight -= 1

    def decision_flow(
        self,
        point: str,
        input: Any,
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        actor: str = "anonymous",
        proposal: Proposal | None = None,
        callback_url: str | None = None,
        follow: Callable[[Change, GuardState], Change | None] | None = None,
    ) -> Flow[Decision]:
        """The flow of one decision, to be driven by `flow.run` or `flow.run_async`; it yields
        where it waits (see `warden.flow`)."""
        started = time.perf_counter_ns()
        if self._policies_stale:
            yield Blocking(self._sync_policies)
        compiled = self._point(point)
        if callback_url is not None:
            check_callback_url(callback_url)
        ctx = _json_object(context or {}, "context", self.max_json_depth)
        request_hash = _request_hash(input, ctx, proposal) if idempotency_key else None
        if idempotency_key is not None and (compiled.name, idempotency_key) in self._keys:
            # A retry of a decision made here: answer it without calling the model again. A
            # key first seen elsewhere is caught by the unique index at commit instead, so a
            # new key costs no read (`_commit`).
            key = idempotency_key
            existing = yield Blocking(lambda: self._existing(compiled.name, key, request_hash))
            if existing is not None:
                return existing  # type: ignore[no-any-return]
        decision_id = new_id()
        now = datetime.now(UTC)
        try:
            data = _json_object(input, "input", self.max_json_depth)
            compiled.validate_input(data)
        except (fastjsonschema.JsonSchemaValueException, InvalidInput) as exc:
            error = exc if isinstance(exc, InvalidInput) else _schema_error(compiled, exc)
            return (
                yield from self._refuse_invalid(
                    compiled,
                    decision_id,
                    now,
                    input,
                    ctx,
                    error,
                    idempotency_key,
                    request_hash,
                    actor,
                )
            )
        validated = time.perf_counter_ns()
        if self.deployments.stale:
            yield Blocking(self.deployments.refresh)
        selection = self._select(compiled, data, ctx, decision_id, proposal)
        prediction, failure, model_version = yield from self._predict(
            compiled, data, proposal, selection
        )
        predicted = time.perf_counter_ns()
        pending = self._prepare(
            compiled,
            decision_id,
            now,
            data,
            ctx,
            _Answer(prediction, failure, model_version, selection),
            idempotency_key,
            request_hash,
            actor,
            callback_url,
        )
        pending.marks = (started, validated, predicted, time.perf_counter_ns())
        pending.change.follow = follow
        recorded = yield from self._commit(pending)
        if isinstance(recorded, Decision):  # a retry answered with the first decision
            return recorded
        return self._committed(pending, recorded)

    def _prepare(
        self,
        compiled: CompiledPoint,
        decision_id: str,
        now: datetime,
        data: dict[str, Any],
        ctx: dict[str, Any],
        answer: _Answer,
        idempotency_key: str | None,
        request_hash: str | None,
        actor: str,
        callback_url: str | None,
    ) -> _Pending:
        """The one place a decided change is built, for every entry point (`decide`,
        `decide_async`, `decide_many`, the HTTP endpoints): the route, tightened while an
        alert holds the point; the row; the writer's re-checks of the kill switch and of the
        canary whose challenger answered (`revoke`, `variant`); the review task."""
        routing = self._route(compiled, decision_id, data, ctx, answer.prediction, answer.failure)
        row = _decision_row(
            compiled,
            decision_id,
            now,
            data,
            ctx,
            routing,
            answer.prediction,
            answer.version,
            idempotency_key,
            request_hash,
            actor,
        )
        selection = answer.selection
        variant = selection.variant if selection else None
        change = self._change(compiled, row, actor, callback_url, variant)
        return _Pending(compiled, row, change, data, answer)

    def _commit(self, pending: _Pending) -> Flow[dict[str, Any] | Decision]:
        """Commit a prepared decision: its committed row, or — for a retried idempotency key
        taken meanwhile (a concurrent retry, a replica, a restart) — the first decision."""
        compiled, row = pending.compiled, pending.row
        key = row["idempotency_key"]
        try:
            recorded: dict[str, Any] = yield Commit(self.recorder, pending.change)
        except DuplicateKey:
            if key is None:
                raise
            request_hash = row["request_hash"]
            existing = yield Blocking(lambda: self._existing(compiled.name, key, request_hash))
            if existing is None:
                raise
            self._keys.add(compiled.name, key)
            return existing  # type: ignore[no-any-return]
        if key is not None:
            self._keys.add(compiled.name, key)
        return recorded

    def _committed(self, pending: _Pending, recorded: dict[str, Any]) -> Decision:
        """After the commit, the same for every entry point: shadow calls, observers."""
        selection, answer = pending.answer.selection, pending.answer
        if selection is not None and selection.shadows and answer.failure is None:
            self._shadow_calls(pending.compiled, recorded["id"], pending.data, selection)
        if self.observers:
            observe(self, recorded, pending.marks)
        return queries.to_decision(recorded)

    def _route(
        self,
        compiled: CompiledPoint,
        decision_id: str,
        data: dict[str, Any],
        ctx: dict[str, Any],
        prediction: Prediction | None,
        failure: Failure | None,
    ) -> Routing:
        """The policy's route, tightened to review while a protective alert holds the point."""
        routing = route(
            compiled,
            decision_id=decision_id,
            input=data,
            context=ctx,
            outcome=prediction.outcome if prediction else None,
            confidence=prediction.confidence if prediction else None,
            failure=failure,
        )
        if self.tightened and compiled.name in self.tightened:
            routing = tighten(routing, self.tightened[compiled.name])
        return routing

    def _select(
        self,
        compiled: CompiledPoint,
        data: dict[str, Any],
        ctx: dict[str, Any],
        decision_id: str,
        proposal: Proposal | None,
    ) -> Selection | None:
        """The model that answers: the champion, or the challenger of an active canary."""
        if compiled.spec.model.kind is ModelKind.PROPOSAL or proposal is not None:
            return None
        if self._is_killed(compiled.name):
            return None
        return self.deployments.select(compiled, data, ctx, decision_id)

    def _shadow_calls(
        self, compiled: CompiledPoint, decision_id: str, data: dict[str, Any], selection: Selection
    ) -> None:
        if self._shadow is None:
            self._shadow = ShadowRunner(
                self.recorder, isolated=self.shadow_process, host=self.shadow_host
            )
        for version, model in selection.shadows:
            self._shadow.submit(ShadowCall(decision_id, compiled.name, version, model, data))

    def _predict(
        self,
        compiled: CompiledPoint,
        data: dict[str, Any],
        proposal: Proposal | None,
        selection: Selection | None,
    ) -> Flow[tuple[Prediction | None, Failure | None, str | None]]:
        spec = compiled.spec.model
        if self._is_killed(compiled.name):
            version = proposal.model_version if proposal else spec.version
            return None, Failure("kill_switch", KILL_REASON, kill=True), version
        if spec.kind is ModelKind.PROPOSAL:
            if proposal is None:
                raise InvalidRequest(
                    f"point '{compiled.name}' takes the AI's proposal from the caller; send "
                    "`output` and `confidence` with the input",
                    field="output",
                )
            version = proposal.model_version or spec.version
            try:
                return (
                    check_prediction(proposal.outcome, proposal.confidence, compiled.spec.outcomes),
                    None,
                    version,
                )
            except ModelFailure as exc:
                return None, Failure(exc.code, exc.message), version
        if proposal is not None:
            raise InvalidRequest(
                f"point '{compiled.name}' runs its own model ({spec.kind}); do not send "
                "`output` or `confidence`",
                field="output",
            )
        assert selection is not None and selection.model is not None
        try:
            prediction: Prediction = yield CallModel(selection.model, data)
        except ModelFailure as exc:
            return None, Failure(exc.code, exc.message), selection.version
        return prediction, None, selection.version

    def _record_decision(
        self, compiled: CompiledPoint, row: dict[str, Any], actor: str
    ) -> Flow[Decision]:
        """Commit a refused decision (invalid input)."""
        change = self._change(compiled, row, actor, None, None)
        answer = _Answer(None, None, row["model_version"], None)
        pending = _Pending(compiled, row, change, row["input"], answer)
        recorded = yield from self._commit(pending)
        if isinstance(recorded, Decision):
            return recorded
        return queries.to_decision(recorded)

    def _change(
        self,
        compiled: CompiledPoint,
        row: dict[str, Any],
        actor: str,
        callback_url: str | None,
        variant: str | None,
    ) -> Change:
        """The decision row, its event and (for review) its task: one atomic change."""
        draft = EventDraft(
            type="decision.created",
            actor=actor,
            point=compiled.name,
            decision_id=row["id"],
            payload=_event_payload(row),
            ts=row["created_at"],
            checked=True,  # input and context passed _check_finite, confidence check_prediction
        )

        def revoke(change: Change, code: str) -> None:
            # The change comes in as an argument, not from this scope: a closure over it would
            # make every decision a reference cycle, left to the garbage collector's pauses.
            decision, event = change.decision, change.events[0]
            assert decision is not None
            routing = route(
                compiled,
                decision_id=decision["id"],
                input=decision["input"],
                context=decision["context"],
                outcome=None,
                confidence=None,
                failure=Failure(code, REVOKED[code], kill=True),
            )
            _apply_routing(decision, routing)
            event.payload = _event_payload(decision)
            if decision["route"] == Route.REVIEW.value:
                task = new_task_row(compiled, decision, callback_url)
                event.payload["review_task"] = task_payload(task)
                change.rows.append((review_tasks, task))

        change = Change(events=[draft], decision=row, revoke=revoke, variant=variant)
        if row["route"] == Route.REVIEW.value:  # the task is written in the decision's transaction
            task = new_task_row(compiled, row, callback_url)
            draft.payload["review_task"] = task_payload(task)
            change.rows.append((review_tasks, task))
        return change

    def decide_many(
        self,
        point: str,
        inputs: Sequence[Any],
        *,
        contexts: Sequence[Mapping[str, Any]] | None = None,
        actor: str = "anonymous",
    ) -> list[Decision]:
        """Many decisions of one point at once: one model call for the batch where the adapter
        allows (scikit-learn: one predict_proba), then one group commit for all of them.

        Each decision is routed, recorded and audited exactly as by `decide`; an input that
        fails its schema is refused and recorded, and comes back as that refused decision
        (rather than raised, so one bad row does not hide the others).
        """
        # a batch builds thousands of objects, none in a cycle: the collector can pause
        with self._in_flight_place(), collector_paused():
            return self._decide_many(point, inputs, contexts, actor)

    def _decide_many(
        self,
        point: str,
        inputs: Sequence[Any],
        contexts: Sequence[Mapping[str, Any]] | None,
        actor: str,
    ) -> list[Decision]:
        if self._policies_stale:
            self._sync_policies()
        compiled = self._point(point)
        if compiled.spec.model.kind is ModelKind.PROPOSAL:
            raise InvalidRequest(
                f"point '{compiled.name}' takes proposals; send them one by one with decide()",
                field="point",
            )
        if contexts is not None and len(contexts) != len(inputs):
            raise InvalidRequest(
                f"{len(contexts)} contexts for {len(inputs)} inputs; give one per input or none",
                field="contexts",
            )
        now = datetime.now(UTC)
        valid: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        refused: dict[int, Decision] = {}
        for index, raw in enumerate(inputs):
            given = dict(contexts[index]) if contexts else {}
            ctx: dict[str, Any] = {}  # a context refused with its input is not recorded
            decision_id = new_id()
            try:
                ctx = _json_object(given, "context", self.max_json_depth)
                data = _json_object(raw, "input", self.max_json_depth)
                compiled.validate_input(data)
            except (fastjsonschema.JsonSchemaValueException, InvalidInput) as exc:
                error = exc if isinstance(exc, InvalidInput) else _schema_error(compiled, exc)
                try:
                    flow.run(
                        self._refuse_invalid(
                            compiled, decision_id, now, raw, ctx, error, None, None, actor
                        )
                    )
                except InvalidInput as refusal:
                    refused[index] = self.get(refusal.extra["decision_id"])
                continue
            valid.append((index, decision_id, data, ctx))
        answers = self._predict_batch(compiled, [(d, c, i) for _, i, d, c in valid])
        pending: list[tuple[int, _Pending]] = [
            (
                index,
                self._prepare(
                    compiled, decision_id, now, data, ctx, answer, None, None, actor, None
                ),
            )
            for (index, decision_id, data, ctx), answer in zip(valid, answers, strict=True)
        ]
        submitted = self.recorder.submit_many([p.change for _, p in pending])
        outcomes: list[Any] = []
        for future in submitted:  # every one, so none is left unanswered behind an error
            try:
                outcomes.append(self.recorder.wait(future))
            except Exception as exc:
                outcomes.append(exc)
        failed = next((o for o in outcomes if isinstance(o, Exception)), None)
        if failed is not None:
            recorded = [
                p.row["id"]
                for (_, p), o in zip(pending, outcomes, strict=True)
                if not isinstance(o, Exception)
            ]
            if isinstance(failed, WardenError):
                failed.extra.setdefault("recorded", recorded)
            raise failed
        decisions: dict[int, Decision] = dict(refused)
        for (index, item), recorded_row in zip(pending, outcomes, strict=True):
            decisions[index] = self._committed(item, recorded_row)
        return [decisions[index] for index in range(len(inputs))]

    def _predict_batch(
        self, compiled: CompiledPoint, items: list[tuple[dict[str, Any], dict[str, Any], str]]
    ) -> list[_Answer]:
        """Answers for a batch: the champion in one call; a rollout's items one by one, each
        with its own selection (the canary's challenger, shadows) as `decide` makes it."""
        if not items:
            return []
        if self._is_killed(compiled.name):
            version = compiled.spec.model.version
            kill = Failure("kill_switch", KILL_REASON, kill=True)
            return [_Answer(None, kill, version, None) for _ in items]
        state = self.deployments.state(compiled.name)
        if state.rollout is not None:  # each item may go to another model: decide one by one
            answers = []
            for data, ctx, decision_id in items:
                selection = self._select(compiled, data, ctx, decision_id, None)
                answer = flow.run(self._predict(compiled, data, None, selection))
                answers.append(_Answer(*answer, selection))
            return answers
        assert state.champion is not None
        results = state.champion.call_many([data for data, _, _ in items])
        selection = Selection(state.champion, state.champion_version)
        return [
            _Answer(None, Failure(r.code, r.message), state.champion_version, selection)
            if isinstance(r, ModelFailure)
            else _Answer(r, None, state.champion_version, selection)
            for r in results
        ]

    def _refuse_invalid(
        self,
        compiled: CompiledPoint,
        decision_id: str,
        now: datetime,
        raw: Any,
        ctx: dict[str, Any],
        error: WardenError,
        idempotency_key: str | None,
        request_hash: str | None,
        actor: str,
    ) -> Flow[Decision]:
        """Invalid input is refused and recorded, then reported with the decision id."""
        storable = (
            isinstance(raw, dict)
            and jsonlimits.too_deep(raw, self.max_json_depth, "input") is None
            and _is_canonical(raw)
        )
        stored_input = raw if storable else {"_unrepresentable": repr(raw)[:2000]}
        reason = Reason(
            code="invalid_input", kind="refuse", message=error.message, field=error.field
        )
        routing = Routing(Route.REFUSED, None, [reason])
        row = _decision_row(
            compiled,
            decision_id,
            now,
            stored_input,
            ctx,
            routing,
            None,
            compiled.spec.model.version,
            idempotency_key,
            request_hash,
            actor,
        )
        decision = yield from self._record_decision(compiled, row, actor)
        if self.observers:
            observe(self, row)
        error.extra["decision_id"] = decision.id
        raise error

    def _existing(self, point: str, key: str, request_hash: str | None) -> Decision | None:
        with self.db.connect() as conn:
            row = queries.find_by_idempotency_key(conn, point, key)
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise Conflict(
                f"Idempotency-Key '{key}' was already used for a different request to "
                f"'{point}' (decision {row.id}); use a new key for a new decision",
                field="Idempotency-Key",
                decision_id=row.id,
            )
        decision = queries.to_decision(row)
        invalid = next((r for r in decision.reasons if r.code == "invalid_input"), None)
        if invalid is not None:
            raise InvalidInput(invalid.message, field=invalid.field, decision_id=decision.id)
        return decision

    def get(self, decision_id: str) -> Decision:
        with self.db.connect() as conn:
            decision = queries.get_decision(conn, decision_id)
        if decision is None:
            raise NotFound(f"no decision with id '{decision_id}'", field="id")
        return decision

    def record_ground_truth(self, decision_id: str, outcome: str, *, actor: str) -> Decision:
        """Ground truth arriving later, for realised accuracy. Recorded once; a second is a conflict."""
        decision = self.get(decision_id)
        compiled = self.points.get(decision.point)
        allowed = compiled.spec.outcomes if compiled else []
        if compiled and outcome not in allowed:
            raise InvalidRequest(
                f"'{outcome}' is not an outcome of '{decision.point}'; use one of {allowed}",
                field="outcome",
            )
        now = datetime.now(UTC)

        def apply(conn: sa.Connection) -> int:
            result = conn.execute(
                decisions.update()
                .where(decisions.c.id == decision_id, decisions.c.ground_truth.is_(None))
                .values(ground_truth=outcome, ground_truth_at=now)
            )
            if result.rowcount != 1:
                raise Conflict(
                    f"decision '{decision_id}' already has a ground truth outcome", field="outcome"
                )
            return 1

        draft = EventDraft(
            type="decision.outcome_received",
            actor=actor,
            point=decision.point,
            decision_id=decision_id,
            payload={"ground_truth": outcome},
            ts=now,
        )
        self.recorder.record(Change(events=[draft], apply=apply))
        return self.get(decision_id)

    # -- kill switch ---------------------------------------------------------------------

    def set_kill(self, scope: str, engaged: bool, *, actor: str, reason: str) -> queries.KillSwitch:
        """Engage or release the kill switch of a point (or `*` for all). Takes effect at once."""
        if scope != GLOBAL_SCOPE and scope not in self.points:
            raise NotFound(
                f"no decision point '{scope}'; use a point name or '*' for all", field="point"
            )
        return self.write_kill_switch(scope, engaged, actor=actor, reason=reason)

    def write_kill_switch(
        self, scope: str, engaged: bool, *, actor: str, reason: str
    ) -> queries.KillSwitch:
        """Record a kill switch's new state with its event, for any scope the caller checked: a
        point, `*`, or another part's own (the MCP gateway's `agent:NAME`, `server:NAME`)."""
        if not reason.strip():
            raise InvalidRequest(
                "say why the kill switch changes; a reason is required", field="reason"
            )
        now = datetime.now(UTC)
        values = {"engaged": engaged, "actor": actor, "reason": reason, "changed_at": now}

        def apply(conn: sa.Connection) -> None:
            updated = conn.execute(
                kill_switches.update().where(kill_switches.c.scope == scope).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(kill_switches.insert().values(scope=scope, **values))

        draft = EventDraft(
            type="kill_switch.engaged" if engaged else "kill_switch.released",
            actor=actor,
            point=scope if scope in self.points else None,
            payload={"scope": scope, "reason": reason},
            ts=now,
        )
        self.recorder.record(
            Change(events=[draft], apply=apply, guard_update=lambda g: g.with_kill(scope, engaged))
        )
        self._refresh_kill_state()
        return queries.KillSwitch(scope, engaged, actor, reason, now)

    def kill_switches(self) -> list[queries.KillSwitch]:
        with self.db.connect() as conn:
            return queries.kill_switch_rows(conn)

    def engaged_switches(self) -> frozenset[str]:
        """The scopes of the kill switches engaged as of this process's last commit: a hint for
        a fast path, not a guarantee (the writer re-reads them inside the ledger lock)."""
        return self._killed

    def _is_killed(self, point: str) -> bool:
        return is_killed(self._killed, point)

    def _on_guard_state(self, guard: GuardState) -> None:
        """After each commit: kill switches, rollouts and live policies as of the ledger head."""
        self._killed = guard.killed
        deployments: Deployments | None = getattr(self, "deployments", None)  # None while starting
        if deployments is not None:
            deployments.observe(guard)
        if guard.policies != self._live_policies:
            if self._live_policies is not None:
                self._policies_stale = True
            self._live_policies = guard.policies

    def _refresh_kill_state(self) -> None:
        with self._kill_lock:
            self._killed = frozenset(k.scope for k in self.kill_switches() if k.engaged)

    # -- lifecycle -----------------------------------------------------------------------

    def _point(self, name: str) -> CompiledPoint:
        try:
            return self.points[name]
        except KeyError:
            if name in self.broken:
                error = self.broken[name].error
                raise PointUnavailable(
                    f"decision point '{name}' did not load: {error.location}: {error.message}. "
                    "Fix the file (`warden policy check` shows every problem) and restart",
                    field="point",
                ) from None
            known = ", ".join(sorted(self.points)) or "(none loaded)"
            raise NotFound(
                f"no decision point '{name}'; known points: {known}", field="point"
            ) from None

    def approve_policy(self, point: str, version: str, *, actor: str) -> PolicyVersion:
        """Put a pending policy version live (a second person); effective from the next decision."""
        self._point(point)
        approved = self.policies.approve(point, version, actor=actor)
        self._sync_policies()
        return approved

    def _sync_policies(self) -> None:
        """Decide under the live version of each point, as stored — whoever approved it where."""
        with self._policy_lock:
            self._policies_stale = False
            effective = self.policies.effective(self.points)
            for name, compiled in effective.items():
                if compiled.version != self.points[name].version:
                    self._install(name, compiled)

    def _install(self, name: str, compiled: CompiledPoint) -> None:
        previous = self.points[name]
        if compiled.spec.model != previous.spec.model:
            self.models[name] = _load_guarded(compiled)
            self.deployments.replace_file_model(name, compiled, self.models[name])
        self.points[name] = compiled

    def close(self) -> None:
        if self._shadow is not None:
            self._shadow.close()
        self.recorder.close()


def _schema_error(
    compiled: CompiledPoint, exc: fastjsonschema.JsonSchemaValueException
) -> InvalidInput:
    field = ".".join(str(p) for p in exc.path[1:]) or None
    message = exc.message.replace("data.", "input.", 1).replace("data ", "input ", 1)
    return InvalidInput(
        f"{message}; fix the input to match the schema of '{compiled.name}'", field=field
    )


def _load_guarded(point: CompiledPoint) -> GuardedModel | None:
    try:
        model = load_model(point.spec.model, point.base_dir)
    except ModelLoadError as exc:
        raise model_error(point, exc) from exc
    return None if model is None else _guard(point, model)


def _guard(point: CompiledPoint, model: Model) -> GuardedModel:
    return GuardedModel(
        model,
        spec=point.spec.model,
        failure=point.spec.failure,
        outcomes=point.spec.outcomes,
        max_concurrency=MODEL_WORKERS,
    )


def _apply_routing(row: dict[str, Any], routing: Routing) -> None:
    row["route"] = routing.route.value
    row["status"] = (Status.PENDING if routing.route is Route.REVIEW else Status.FINAL).value
    row["outcome"] = routing.outcome
    row["reasons"] = [r.model_dump(exclude_none=True) for r in routing.reasons]
    row["decided_at"] = None if routing.route is Route.REVIEW else row["created_at"]


def _decision_row(
    compiled: CompiledPoint,
    decision_id: str,
    now: datetime,
    data: dict[str, Any],
    ctx: dict[str, Any],
    routing: Routing,
    prediction: Prediction | None,
    model_version: str | None,
    idempotency_key: str | None,
    request_hash: str | None,
    actor: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": decision_id,
        "point": compiled.name,
        "created_at": now,
        "proposed_outcome": prediction.outcome if prediction else None,
        "confidence": prediction.confidence if prediction else None,
        "policy_version": compiled.version,
        "model_version": model_version,
        "input": data,
        "context": ctx,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "actor": actor,
        "ground_truth": None,
        "ground_truth_at": None,
    }
    _apply_routing(row, routing)
    return row


def _event_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "route",
            "status",
            "outcome",
            "proposed_outcome",
            "confidence",
            "reasons",
            "input",
            "context",
            "policy_version",
            "model_version",
            "idempotency_key",
            "request_hash",
        )
    }


_INT64_MIN, _UINT64_END = -(2**63), 2**64  # what the ledger's canonical JSON stores exactly


def _json_object(value: Any, name: str, max_depth: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object, not {type(value).__name__}", field=name)
    _check_finite(value, name, max_depth, 1)
    return value


def _check_finite(value: Any, path: str, max_depth: int, level: int) -> None:
    """Only values the ledger can store exactly: finite floats, 64-bit integers, string keys,
    and no deeper than `max_depth` (which also bounds this recursion)."""
    if isinstance(value, dict | list | tuple) and level > max_depth:
        raise InvalidInput(jsonlimits.depth_message(path, max_depth), field=path)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{path} is {value}; numbers must be finite", field=path)
    if isinstance(value, int) and not _INT64_MIN <= value < _UINT64_END:
        raise InvalidInput(f"{path} is outside the 64-bit integer range", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path} has a non-string key {key!r}", field=path)
            kind = type(item)  # a plain string or number passes without a call (most do)
            if kind is str or (kind is int and _INT64_MIN <= item < _UINT64_END):
                continue
            if item is None or kind is bool or (kind is float and math.isfinite(item)):
                continue
            _check_finite(item, f"{path}.{key}", max_depth, level + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str or (kind is int and _INT64_MIN <= item < _UINT64_END):
                continue
            if item is None or kind is bool or (kind is float and math.isfinite(item)):
                continue
            _check_finite(item, f"{path}[{index}]", max_depth, level + 1)
    elif value is not None and not isinstance(value, str | int | float):
        raise InvalidInput(
            f"{path} is a {type(value).__name__}; only JSON values (objects, arrays, strings, "
            "numbers, booleans, null) can be decided on and recorded",
            field=path,
        )


def _is_canonical(value: Any) -> bool:
    try:
        canonical_bytes(value)
    except NotCanonical:
        return False
    return True


def _request_hash(input: Any, context: dict[str, Any], proposal: Proposal | None) -> str:
    material = {
        "input": input,
        "context": context,
        "proposal": [repr(proposal.outcome), repr(proposal.confidence), proposal.model_version]
        if proposal
        else None,
    }
    try:
        data = canonical_bytes(material)
    except NotCanonical:
        data = repr(material).encode()
    return hashlib.sha256(data).hexdigest()
