"""`@warden.tool("point")`: a Python function an agent framework calls as a tool, governed by the
same flow as the MCP gateway (proposed, routed, held, bound to the exact call, executed once).

A refused or denied call raises ToolRefused; a call still held raises ToolPending with the
decision id; call the function again with `warden_decision_id=` to collect it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from warden.errors import WardenError
from warden.mcp.config import GatewayConfig, ToolRule, Upstream, Wait
from warden.mcp.governor import Answer, Governor, Outcome, Runner, ToolCall

if TYPE_CHECKING:
    from warden.sdk.local import Warden

F = TypeVar("F", bound=Callable[..., Any])
SERVER = "python"
DECISION_ARG = "warden_decision_id"


class ToolRefused(WardenError):
    """The call was refused or denied; the message says why, in words an agent can act on."""

    type = "tool_refused"


class ToolPending(WardenError):
    """The call waits for a person; call again with `warden_decision_id=<decision_id>`."""

    type = "tool_pending"

    @property
    def decision_id(self) -> str:
        return str(self.extra.get("decision_id"))


class _Loop:
    """One event loop on a daemon thread, where sync tools run their governed flow."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="warden-tools", daemon=True).start()
                cls._loop = loop
            return cls._loop


def governor_for(
    warden: Warden, point: str, *, key: bytes, wait: Wait, secrets: list[str]
) -> Governor:
    config = GatewayConfig(
        gateway="python",
        agent="agent",
        upstreams={SERVER: Upstream(command="(in-process)")},
        tools=[ToolRule(server=SERVER, tool="*", point=point, secrets=secrets)],
        wait=wait,
        loop=None,
    )
    return Governor(warden.engine, config, key)


def govern(
    warden: Warden,
    point: str,
    *,
    key: bytes,
    agent: str = "agent",
    name: str | None = None,
    annotations: dict[str, bool] | None = None,
    wait: Wait | None = None,
    secrets: list[str] | None = None,
) -> Callable[[F], F]:
    governor = governor_for(
        warden, point, key=key, wait=wait or Wait(mode="pending"), secrets=list(secrets or [])
    )

    def decorate(fn: F) -> F:
        tool = name or fn.__name__
        signature = inspect.signature(fn)
        description = inspect.getdoc(fn)

        def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall:
            decision_id = kwargs.pop(DECISION_ARG, None)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return ToolCall(
                agent=agent,
                actor=f"agent:{agent}",
                server=SERVER,
                tool=tool,
                arguments=dict(bound.arguments),
                annotations=dict(annotations or {}),
                description=description,
                decision_id=decision_id,
            )

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                call = prepare(args, kwargs)

                async def execute() -> Any:
                    return await fn(**call.arguments)

                return _unwrap(await governor.call(call, Runner(execute, _outcome)))

            return cast(F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            call = prepare(args, kwargs)

            async def execute() -> Any:
                return await asyncio.to_thread(fn, **call.arguments)

            future = asyncio.run_coroutine_threadsafe(
                governor.call(call, Runner(execute, _outcome)), _Loop.get()
            )
            return _unwrap(future.result())

        return cast(F, run_sync)

    return decorate


def _outcome(result: Any) -> Outcome:
    try:
        body = json.dumps(result, sort_keys=True, default=repr).encode()
    except (TypeError, ValueError):
        body = repr(result).encode()
    return Outcome(True, body)


def _unwrap(answer: Answer) -> Any:
    if answer.status == "executed":
        return answer.result
    if answer.status == "already_executed":
        if answer.result is not None:
            return answer.result
        raise ToolRefused(answer.message, decision_id=answer.decision_id)
    if answer.status == "pending":
        raise ToolPending(answer.message, decision_id=answer.decision_id)
    raise ToolRefused(answer.message, decision_id=answer.decision_id)
