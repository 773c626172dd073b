"""The governed flow of one tool call, whatever carries it (the MCP gateway or `warden.tool`).

proposed (a decision in proposal mode) → auto: executed at once; refused: the agent is told why;
review: held until a person decides (or the SLA expires) → an approval is checked against the
exact call → executed at most once → its result recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from warden.mcp import kill
from warden.mcp import ledger as tool_events
from warden.mcp.binding import Binding, keyed_digest, mismatch, text_digest
from warden.mcp.config import GatewayConfig, ToolRule, Wait
from warden.mcp.limits import Limiter
from warden.mcp.secrets import redact
from warden.store.recorder import Change, DuplicateKey

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
    ) -> None:
        self.engine = engine
        self.config = config
        self.key = key
        self.limiter = limiter or Limiter(config.limits, config.loop)
        self.clock = clock
        self._results: OrderedDict[str, Any] = OrderedDict()
        self._claiming: dict[str, asyncio.Lock] = {}
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._unsettled: dict[str, asyncio.Future[Any]] = {}  # result events being committed

    # -- entry -----------------------------------------------------------------------------

    async def call(self, call: ToolCall, runner: Runner) -> Answer:
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
        switch = await asyncio.to_thread(kill.engaged, self.engine, call.agent, call.server)
        if switch is not None:
            why = f"the kill switch {switch.scope} is engaged: {switch.reason}"
            if self.config.kill.action == "refused":
                return await self._deny(call, rule.point, None, "kill_switch", why)
            hold = why
        exceeded = self.limiter.check(
            call.agent, call.server, call.tool, keyed_digest(self.key, call.arguments)
        )
        if exceeded is not None:
            if exceeded.action == "refused":
                return await self._deny(call, rule.point, None, exceeded.code, exceeded.message)
            hold = hold or exceeded.message
        try:
            decision = await self.engine.decide_async(
                rule.point,
                self.proposal_input(call, rule),
                context={"gateway": {"name": self.config.gateway, "hold": hold}},
                idempotency_key=call.idempotency_key,
                actor=call.actor,
                proposal=Proposal(EXECUTE, 1.0),
            )
        except InvalidInput as exc:
            return Answer("refused", f"the call was refused: {exc}", exc.extra.get("decision_id"))
        except WardenError as exc:
            return Answer("refused", f"the call could not be decided: {exc}")
        return await self._settle(decision, call, rule, runner)

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
        running = self._running.get(decision.id)
        if running is not None:  # it runs right now, here: answer with its result
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
            await asyncio.shield(unsettled)
        history = await asyncio.to_thread(tool_events.history, self.engine.db, decision.id)
        if not any(e.type == tool_events.EXECUTED for e in history):
            return None
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
        try:
            try:
                result = await runner.execute()
            except Exception as exc:
                running.set_exception(exc)
                running.exception()  # retrieved: nobody need be waiting for it
                await self._record_result(call, decision, Outcome(False, b"", str(exc)))
                raise
            # The agent does not wait for the result's event: it commits with the next batch
            # (and before this gateway answers anything about this decision again).
            outcome = runner.outcome(result)
            pending = asyncio.wrap_future(self._submit_result(call, decision, outcome))
            self._unsettled[decision.id] = pending
            pending.add_done_callback(lambda _: self._unsettled.pop(decision.id, None))
            self._results[decision.id] = result
            running.set_result(result)
        finally:
            self._running.pop(decision.id, None)
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        return Answer("executed", "executed", decision.id, result, decision.point)

    async def flush(self) -> None:
        """Wait until every result event this governor submitted is committed."""
        while self._unsettled:
            await asyncio.gather(*list(self._unsettled.values()), return_exceptions=True)

    async def _record_result(self, call: ToolCall, decision: Decision, outcome: Outcome) -> None:
        await asyncio.wrap_future(self._submit_result(call, decision, outcome))

    def _submit_result(
        self, call: ToolCall, decision: Decision, outcome: Outcome
    ) -> concurrent.futures.Future[Any]:
        return self.engine.recorder.submit(
            tool_events.result_change(
                actor=call.actor,
                point=decision.point,
                decision_id=decision.id,
                ok=outcome.ok,
                digest="sha256:" + hashlib.sha256(outcome.body).hexdigest(),
                size=len(outcome.body),
                error=outcome.error,
            )
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
        status: Status = "refused" if decision_id is None or code == "refused" else "denied"
        return Answer(status, message, decision_id, point=point)

    async def _record(self, change: Change) -> Any:
        return await asyncio.wrap_future(self.engine.recorder.submit(change))
