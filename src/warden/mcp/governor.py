"""The governed flow of one tool call, whatever carries it (the MCP gateway or `warden.tool`).

proposed (a decision in proposal mode) → auto: executed at once; refused: the agent is told why;
review: held until a person decides (or the SLA expires) → an approval is checked against the
exact call → executed at most once → its result recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from warden.decision import Decision, Route
from warden.engine import Engine, Proposal
from warden.errors import InvalidInput, NotFound, WardenError
from warden.mcp import kill, metrics, trace
from warden.mcp import ledger as tool_events
from warden.mcp.binding import Binding, keyed_digest, mismatch, text_digest
from warden.mcp.config import GatewayConfig, ToolRule, Wait
from warden.mcp.limits import Limiter, Windows
from warden.mcp.secrets import redact
from warden.store.recorder import Change, DuplicateKey, GuardState

EXECUTE = "execute"
HOLD_RULE = "context.gateway.hold != ''"
# MCP's defaults for absent annotations: assume the worst (may write, may destroy, not
# idempotent, reaches the outside world), so a rule never mistakes silence for safety.
ANNOTATION_DEFAULTS = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}
RESULTS_KEPT = 1000
# How long a result event may wait to share the commit of the next call's decision. An agent
# calling in a loop asks again within it, so its call waits for one commit, not two; a slower
# agent's results commit alone meanwhile, off its path. A gateway that dies in this window
# leaves `executed` without `result`, the state the ledger already names for a crash mid-call.
RESULT_LINGER = 0.02
RESULT_RETRIES = 30  # a result event the database failed to commit is tried again, pausing
RESULT_RETRY_PAUSE = 0.05  # a little longer each time (about 23 s in all)

Status = Literal["executed", "refused", "denied", "pending", "already_executed"]
Progress = Callable[[float, str], Awaitable[None]]


@dataclass(frozen=True)
class ToolCall:
    """One call an agent asked for, and who asked (`agent` names the principal)."""

    agent: str
    actor: str
    server: str
    tool: str
    arguments: dict[str, Any]
    annotations: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    decision_id: str | None = None
    idempotency_key: str | None = None
    received: float = field(default_factory=time.perf_counter, compare=False)


@dataclass(frozen=True)
class Outcome:
    """How the tool ran: `ok` false for an error result; `body` is what is digested and sized."""

    ok: bool
    body: bytes
    error: str | None = None


@dataclass
class Runner:
    """How to run the tool and read it back, supplied by the transport."""

    execute: Callable[[], Awaitable[Any]]
    outcome: Callable[[Any], Outcome]
    describe: Callable[[], Awaitable[str | None]] | None = None
    progress: Progress | None = None


@dataclass
class Answer:
    """What the agent is told."""

    status: Status
    message: str
    decision_id: str | None = None
    result: Any = None
    point: str | None = None

    @property
    def executed(self) -> bool:
        return self.status == "executed"


class Governor:
    def __init__(
        self,
        engine: Engine,
        config: GatewayConfig,
        key: bytes,
        *,
        limiter: Limiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        result_linger: float = 0.0,
    ) -> None:
        """`result_linger`: seconds a result event may wait to ride with the next commit."""
        self.engine = engine
        self.config = config
        self.key = key
        self.limiter = limiter or Limiter(config.limits, config.loop, Windows(engine.db))
        self.clock = clock
        self._results: OrderedDict[str, Any] = OrderedDict()
        self._claiming: dict[str, asyncio.Lock] = {}
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._unsettled: dict[str, asyncio.Future[Any]] = {}  # result events being committed
        self.result_linger = result_linger
        self._lingering: list[tuple[Change, asyncio.Future[Any]]] = []
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- entry -----------------------------------------------------------------------------

    async def call(self, call: ToolCall, runner: Runner) -> Answer:
        """Govern one call; counted and timed by how it ended (see `warden.mcp.metrics`)."""
        labels = (self.config.gateway, call.server, call.tool)
        in_tool = [0.0]
        execute = runner.execute

        async def timed() -> Any:
            started = time.perf_counter()
            try:
                return await execute()
            finally:
                in_tool[0] += time.perf_counter() - started

        started = time.perf_counter()
        try:
            answer = await self._call(call, dataclasses.replace(runner, execute=timed))
        except Exception:
            metrics.TOOL_CALLS.labels(*labels, "failed").inc()
            raise
        metrics.TOOL_CALLS.labels(*labels, answer.status).inc()
        if answer.status == "executed":
            took = time.perf_counter() - started
            metrics.TOOL_SECONDS.labels(*labels, "tool").observe(in_tool[0])
            metrics.TOOL_SECONDS.labels(*labels, "governance").observe(max(0.0, took - in_tool[0]))
        return answer

    async def _call(self, call: ToolCall, runner: Runner) -> Answer:
        rule = self.config.rule_for(call.server, call.tool)
        if rule is None:
            return await self._deny(
                call,
                None,
                None,
                "ungoverned",
                f"no decision point governs {call.server}/{call.tool}, so the gateway does not "
                "forward it; ask the operator to add it to the gateway's tools",
            )
        if call.decision_id is not None:
            return await self._resume(call, rule, runner)
        hold = ""
        switch = None
        if self._scopes(call) & self.engine.engaged_switches():  # confirmed from the database
            switch = await asyncio.to_thread(kill.engaged, self.engine, call.agent, call.server)
        if switch is not None:
            why = f"the kill switch {switch.scope} is engaged: {switch.reason}"
            if self.config.kill.action == "refused":
                return await self._deny(call, rule.point, None, "kill_switch", why)
            hold = why
        exceeded = None
        if self.limiter.active:  # one statement, shared with every gateway on this database
            exceeded = await asyncio.to_thread(
                self.limiter.check,
                call.agent,
                call.server,
                call.tool,
                keyed_digest(self.key, call.arguments),
            )
        if exceeded is not None:
            if exceeded.action == "refused":
                return await self._deny(call, rule.point, None, exceeded.code, exceeded.message)
            hold = hold or exceeded.message
        claim = _Claim(self, call, claim=not hold, riders=self._take_lingering())
        carried = False
        try:
            decision = await self.engine.decide_async(
                rule.point,
                self.proposal_input(call, rule),
                context={"gateway": {"name": self.config.gateway, "hold": hold}},
                idempotency_key=call.idempotency_key,
                actor=call.actor,
                proposal=Proposal(EXECUTE, 1.0),
                follow=claim.follow,
            )
            trace.mark("decided")
            carried = claim.decision_id == decision.id  # the follower committed with it
        except InvalidInput as exc:
            return Answer("refused", f"the call was refused: {exc}", exc.extra.get("decision_id"))
        except WardenError as exc:
            return Answer("refused", f"the call could not be decided: {exc}")
        except asyncio.CancelledError:  # once the writer has them they share the commit's fate
            carried = claim.decision_id is not None
            raise
        finally:
            if carried:
                for _, committed in claim.riders:
                    if not committed.done():
                        committed.set_result(None)
            else:  # not committed with a decision: on their own, now
                self._lingering[:0] = claim.riders
                self._submit_lingering()
        if carried:
            if claim.claimed:  # the claim committed with the decision: run it now
                return await self._run(decision, call, runner)
            if claim.killed is not None:  # engaged since this process last committed
                switch = await asyncio.to_thread(kill.engaged, self.engine, call.agent, call.server)
                why = f": {switch.reason}" if switch is not None else ""
                return await self._deny(
                    call,
                    decision.point,
                    decision.id,
                    "kill_switch",
                    f"the kill switch {claim.killed} is engaged{why}; the call was not executed",
                )
        return await self._settle(decision, call, rule, runner)

    @staticmethod
    def _scopes(call: ToolCall) -> frozenset[str]:
        return frozenset((f"agent:{call.agent}", f"server:{call.server}"))

    def proposal_input(self, call: ToolCall, rule: ToolRule) -> dict[str, Any]:
        """What the decision point's rules see as `input` (secrets replaced by digests)."""
        annotations = {k: call.annotations.get(k, v) for k, v in ANNOTATION_DEFAULTS.items()}
        annotations = {
            k: v if isinstance(v, bool) else ANNOTATION_DEFAULTS[k] for k, v in annotations.items()
        }
        return {
            "server": call.server,
            "tool": call.tool,
            "agent": call.agent,
            "arguments": redact(call.arguments, rule.secrets, self.key),
            "annotations": annotations,
            "arguments_digest": keyed_digest(self.key, call.arguments),
            "description_digest": text_digest(call.description),
        }

    # -- asking again about a held call ----------------------------------------------------

    async def _resume(self, call: ToolCall, rule: ToolRule, runner: Runner) -> Answer:
        assert call.decision_id is not None
        try:
            decision = await asyncio.to_thread(self.engine.get, call.decision_id)
        except NotFound:
            return Answer(
                "refused",
                f"there is no decision {call.decision_id}; call again without a decision id",
            )
        if decision.actor != call.actor or decision.input.get("tool") != call.tool:
            return Answer(
                "refused",
                f"decision {call.decision_id} is not one of your calls of {call.tool}; call "
                "again without a decision id",
            )
        done = await self._executed_before(decision)
        if done is not None:
            return done
        return await self._settle(decision, call, rule, runner)

    async def _executed_before(self, decision: Decision) -> Answer | None:
        # The ledger first, this gateway's memory second: a claim that commits while the ledger
        # is read is then still found here (its lock is held until it is marked running).
        history = await asyncio.to_thread(tool_events.history, self.engine.db, decision.id)
        if not any(e.type == tool_events.EXECUTED for e in history):
            return None
        claiming = self._claiming.get(decision.id)
        if claiming is not None:
            async with claiming:
                pass
        waited = False
        running = self._running.get(decision.id)
        if running is not None:  # it runs right now, here: answer with its result
            waited = True
            try:
                result = await asyncio.shield(running)
            except Exception as exc:
                return Answer(
                    "already_executed",
                    f"this call was already executed and failed ({exc}); it is not run twice",
                    decision.id,
                    None,
                    decision.point,
                )
            self._results.setdefault(decision.id, result)
        unsettled = self._unsettled.get(decision.id)
        if unsettled is not None:
            self._submit_lingering()
            waited = True
            await asyncio.shield(unsettled)
        if waited:  # its result event is committed now
            history = await asyncio.to_thread(tool_events.history, self.engine.db, decision.id)
        result = next((e for e in history if e.type == tool_events.RESULT), None)
        if decision.id in self._results:
            ended = (
                "it succeeded"
                if result and result.payload.get("status") == "success"
                else "see its result"
            )
            return Answer(
                "already_executed",
                f"this call was already executed ({ended}); it is not run twice",
                decision.id,
                self._results[decision.id],
                decision.point,
            )
        if result is None:
            words = (
                "its result is not recorded (it may still be running in another gateway, or "
                "the gateway stopped while it ran)"
            )
        else:
            words = f"it ended with {result.payload.get('status')} (result {result.payload.get('digest')})"
        return Answer(
            "already_executed",
            f"this call was already executed and {words}; it is not run twice",
            decision.id,
            None,
            decision.point,
        )

    # -- from a decision to an execution --------------------------------------------------

    async def _settle(
        self, decision: Decision, call: ToolCall, rule: ToolRule, runner: Runner
    ) -> Answer:
        if decision.route is Route.REFUSED:
            why = "; ".join(r.message or r.code for r in decision.reasons) or "a refuse rule fired"
            return await self._deny(
                call,
                decision.point,
                decision.id,
                "refused",
                f"the policy refuses this call: {why}",
                record=True,
            )
        if not decision.is_final:
            decision = await self._wait(decision, runner.progress)
            if not decision.is_final:
                return Answer(
                    "pending",
                    f"the call is held for review as decision {decision.id} and has NOT run "
                    f"yet. Call {call.tool} again with the same arguments and _meta "
                    f'{{"warden/decision_id": "{decision.id}"}} to collect it once decided.',
                    decision.id,
                    point=decision.point,
                )
        if decision.route is Route.REVIEW and _decided_by_person(decision):
            metrics.TOOL_REVIEWED.labels(self.config.gateway, call.server, call.tool).inc()
        if decision.outcome != EXECUTE:
            last = decision.reasons[-1] if decision.reasons else None
            kind = last.kind if last else "reject"
            why = (last.message or last.code) if last else "not approved"
            code = {"expire": "expired", "reject": "rejected"}.get(kind, "denied")
            text = {
                "expired": f"nobody approved the call in time, so it was denied ({why})",
                "rejected": f"a reviewer rejected the call: {why}",
            }.get(code, f"the call was not approved: {why}")
            return await self._deny(call, decision.point, decision.id, code, text)
        held = str(decision.context.get("gateway", {}).get("hold", ""))
        if held and decision.route is not Route.REVIEW:
            return await self._deny(
                call,
                decision.point,
                decision.id,
                "hold_ignored",
                f"the gateway asked for review ({held}) but the point '{decision.point}' has no "
                f"review rule on `{HOLD_RULE}`, so the call is refused",
            )
        return await self._execute(decision, call, rule, runner)

    async def _wait(self, decision: Decision, progress: Progress | None) -> Decision:
        wait: Wait = self.config.wait
        if wait.mode == "pending" or wait.timeout <= 0:
            return decision
        started = time.monotonic()
        next_progress = started
        while True:
            now = time.monotonic()
            if progress is not None and now >= next_progress:
                waited = now - started
                await progress(
                    waited, f"held for review as decision {decision.id}; waited {waited:.0f} s"
                )
                next_progress = now + wait.progress_every
            if now - started >= wait.timeout:
                return decision
            await asyncio.sleep(wait.poll)
            decision = await asyncio.to_thread(self.engine.get, decision.id)
            if decision.is_final:
                return decision

    async def _execute(
        self, decision: Decision, call: ToolCall, rule: ToolRule, runner: Runner
    ) -> Answer:
        description = call.description
        if decision.route is Route.REVIEW and runner.describe is not None:
            description = await runner.describe()  # what the tool says now, not when held
        binding = Binding(
            call.actor,
            call.server,
            call.tool,
            keyed_digest(self.key, call.arguments),
            text_digest(description),
        )
        compiled = self.engine.points.get(decision.point)
        problem = mismatch(
            decision,
            binding,
            live_policy=compiled.version if compiled else None,
            now=self.clock(),
            ttl=self.config.approval_ttl,
        )
        if problem is not None:
            return await self._deny(call, decision.point, decision.id, *problem)
        lock = self._claiming.setdefault(decision.id, asyncio.Lock())
        async with lock:  # one claim per decision per batch; the ledger check covers the rest
            try:
                await self._record(
                    tool_events.claim_change(
                        actor=call.actor,
                        point=decision.point,
                        decision_id=decision.id,
                        binding={
                            "server": call.server,
                            "tool": call.tool,
                            "principal": call.actor,
                            "arguments_digest": binding.arguments_digest,
                            "description_digest": binding.description_digest,
                            "policy_version": decision.policy_version,
                            "route": decision.route.value,
                            "approval_ttl": self.config.approval_ttl,
                        },
                        now=self.clock(),
                    )
                )
            except DuplicateKey:  # executed before: by this gateway or another
                self._claiming.pop(decision.id, None)
                done = await self._executed_before(decision)
                assert done is not None
                return done
            running: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._running[decision.id] = running
        self._claiming.pop(decision.id, None)
        return await self._run(decision, call, runner, running)

    async def _run(
        self,
        decision: Decision,
        call: ToolCall,
        runner: Runner,
        running: asyncio.Future[Any] | None = None,
    ) -> Answer:
        """Run a call whose claim (`approved` + `executed`) is committed, and record its result."""
        if running is None:
            running = asyncio.get_running_loop().create_future()
            self._running[decision.id] = running
        started = time.perf_counter()
        try:
            try:
                result = await runner.execute()
            except Exception as exc:
                running.set_exception(exc)
                running.exception()  # retrieved: nobody need be waiting for it
                timing = _timing(call, started)
                await self._record_result(call, decision, Outcome(False, b"", str(exc)), timing)
                raise
            # The agent does not wait for the result's event: it commits with the next batch
            # (and before this gateway answers anything about this decision again).
            outcome = runner.outcome(result)
            pending = self._submit_result(call, decision, outcome, _timing(call, started))
            self._unsettled[decision.id] = pending
            pending.add_done_callback(lambda _: self._unsettled.pop(decision.id, None))
            self._results[decision.id] = result
            running.set_result(result)
        finally:
            self._running.pop(decision.id, None)
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        return Answer("executed", "executed", decision.id, result, decision.point)

    def close(self) -> None:
        """Release the limit windows' connections."""
        self.limiter.windows.close()

    async def flush(self) -> None:
        """Wait until every result event this governor recorded is committed."""
        self._submit_lingering()
        while self._unsettled:
            await asyncio.gather(*list(self._unsettled.values()), return_exceptions=True)

    async def _record_result(
        self, call: ToolCall, decision: Decision, outcome: Outcome, timing: dict[str, Any]
    ) -> None:
        pending = self._submit_result(call, decision, outcome, timing)
        self._submit_lingering()
        await pending

    def _submit_result(
        self, call: ToolCall, decision: Decision, outcome: Outcome, timing: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """The result event, handed to the writer now or (`result_linger`) with the next
        commit this governor asks for; the future settles when it is committed."""
        change = tool_events.result_change(
            actor=call.actor,
            point=decision.point,
            decision_id=decision.id,
            ok=outcome.ok,
            digest="sha256:" + hashlib.sha256(outcome.body).hexdigest(),
            size=len(outcome.body),
            error=outcome.error,
            call={"server": call.server, "tool": call.tool, **timing},
        )
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[Any] = loop.create_future()
        self._lingering.append((change, committed))
        if self.result_linger <= 0:
            self._submit_lingering()
        elif self._linger_timer is None:
            self._linger_timer = loop.call_later(self.result_linger, self._submit_lingering)
        return committed

    def _take_lingering(self) -> list[tuple[Change, asyncio.Future[Any]]]:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        lingering, self._lingering = self._lingering, []
        return lingering

    def _submit_lingering(self) -> None:
        for change, committed in self._take_lingering():
            self._submit_one(change, committed, 0)

    def _submit_one(self, change: Change, committed: asyncio.Future[Any], attempt: int) -> None:
        """Hand a result event to the writer; one the database failed to commit is tried again
        (a fresh change: the failed one's future is spent), so a passing fault loses none."""
        fresh = dataclasses.replace(change, future=concurrent.futures.Future())
        try:
            submitted = asyncio.wrap_future(self.engine.recorder.submit(fresh))
        except Exception as exc:  # the writer refused it (queue full, closed)
            self._retry(change, committed, attempt, exc)
            return
        submitted.add_done_callback(functools.partial(self._submitted, change, committed, attempt))

    def _submitted(
        self,
        change: Change,
        committed: asyncio.Future[Any],
        attempt: int,
        source: asyncio.Future[Any],
    ) -> None:
        if source.cancelled():
            committed.cancel()
        elif (error := source.exception()) is not None:
            self._retry(change, committed, attempt, error)
        elif not committed.done():
            committed.set_result(source.result())

    def _retry(
        self, change: Change, committed: asyncio.Future[Any], attempt: int, error: BaseException
    ) -> None:
        if attempt >= RESULT_RETRIES or isinstance(error, DuplicateKey) or committed.done():
            if not committed.done():
                committed.set_exception(error)
            return
        asyncio.get_running_loop().call_later(
            RESULT_RETRY_PAUSE * (attempt + 1), self._submit_one, change, committed, attempt + 1
        )

    async def _deny(
        self,
        call: ToolCall,
        point: str | None,
        decision_id: str | None,
        code: str,
        message: str,
        *,
        record: bool = True,
    ) -> Answer:
        if record:
            await self._record(
                tool_events.denied_change(
                    actor=call.actor,
                    point=point,
                    decision_id=decision_id,
                    code=code,
                    message=message,
                    call={
                        "server": call.server,
                        "tool": call.tool,
                        "agent": call.agent,
                        "arguments_digest": keyed_digest(self.key, call.arguments),
                    },
                )
            )
        metrics.TOOL_DENIALS.labels(self.config.gateway, call.server, call.tool, code).inc()
        status: Status = "refused" if decision_id is None or code == "refused" else "denied"
        return Answer(status, message, decision_id, point=point)

    async def _record(self, change: Change) -> Any:
        return await asyncio.wrap_future(self.engine.recorder.submit(change))


def _timing(call: ToolCall, started: float) -> dict[str, float]:
    """Milliseconds in the tool (`started` until now) and in the gateway before it."""
    now = time.perf_counter()
    return {
        "tool_ms": round((now - started) * 1000, 3),
        "governance_ms": round(max(0.0, started - call.received) * 1000, 3),
    }


def _decided_by_person(decision: Decision) -> bool:
    last = decision.reasons[-1] if decision.reasons else None
    return last is not None and last.kind in ("approve", "reject")


class _Claim:
    """What rides in the transaction of a call's decision, asked by the writer with the guard
    state as of the commit (`Change.follow`): earlier calls' result events still waiting
    (`riders`), and the claim of this call — written only if the decision is AUTO with
    `execute`, no kill switch of the agent or server is engaged, and the policy that routed it
    is still the live one. So an auto-routed call costs one commit, and a switch engaged up to
    that commit stops it."""

    def __init__(
        self,
        governor: Governor,
        call: ToolCall,
        *,
        claim: bool,
        riders: list[tuple[Change, asyncio.Future[Any]]],
    ) -> None:
        self.governor = governor
        self.call = call
        self.claim = claim
        self.riders = riders
        self.decision_id: str | None = None
        self.claimed = False
        self.killed: str | None = None

    def follow(self, change: Change, guard: GuardState) -> Change | None:
        decision = change.decision
        assert decision is not None
        trace.mark("lock")
        self.decision_id, self.claimed, self.killed = decision["id"], False, None
        claim = self._claim(decision, guard) if self.claim else None
        if not self.riders:
            return claim
        together = Change(events=[], rows=[])
        for part in [*(c for c, _ in self.riders), *([claim] if claim else [])]:
            together.events.extend(part.events)
            together.rows.extend(part.rows)
        return together

    def _claim(self, decision: dict[str, Any], guard: GuardState) -> Change | None:
        if decision["route"] != Route.AUTO.value or decision["outcome"] != EXECUTE:
            return None
        engaged = sorted(Governor._scopes(self.call) & guard.killed)
        if engaged:
            self.killed = engaged[0]
            return None
        compiled = self.governor.engine.points.get(decision["point"])
        if compiled is None or compiled.version != decision["policy_version"]:
            return None  # the slower path says why: the binding check names the change
        self.claimed = True
        call, data = self.call, decision["input"]
        return tool_events.claim_change(
            actor=call.actor,
            point=decision["point"],
            decision_id=decision["id"],
            binding={  # as `_execute` writes it: the decision's own record of the call
                "server": call.server,
                "tool": call.tool,
                "principal": call.actor,
                "arguments_digest": data["arguments_digest"],
                "description_digest": data["description_digest"],
                "policy_version": decision["policy_version"],
                "route": decision["route"],
                "approval_ttl": self.governor.config.approval_ttl,
            },
            now=self.governor.clock(),
        )
