"""`warden mcp`: the MCP server that agents talk to, in front of the upstream servers.

tools/list shows the upstream tools a decision point governs (less those it refuses whatever the
arguments, where the rule says `hide_refused`); every tools/call goes through the Governor.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import sqlalchemy as sa
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged

from warden.auth.cache import TokenCache
from warden.auth.tokens import Principal, Role, authenticate
from warden.decision import Route
from warden.mcp import trace
from warden.mcp.governor import Answer, Governor, Outcome, Runner, ToolCall
from warden.mcp.upstream import Upstreams
from warden.policy.router import route

DECISION_META = "warden/decision_id"
KEY_META = "warden/idempotency_key"
LISTEN_ERA = "2026-07-28"  # clients from this protocol version on subscribe to changes


@dataclass(frozen=True)
class Identity:
    """Who the agent is: the principal behind its token, or the gateway's configured agent."""

    agent: str
    actor: str
    principal: Principal | None = None

    def may_call(self, point: str) -> bool:
        """A token must carry the caller role for the point; the configured agent may."""
        return self.principal is None or self.principal.can(Role.CALLER, point)


def identity_from_token(db: sa.Engine, secret: str | None) -> Identity | None:
    if not secret:
        return None
    with db.connect() as conn:
        principal: Principal | None = authenticate(conn, secret)
    return _identity(principal)


def _identity(principal: Principal | None) -> Identity | None:
    return None if principal is None else Identity(principal.name, principal.actor, principal)


class _Server(Server[Any]):
    """The SDK's server, announcing `tools.listChanged` to handshake-era clients on every
    transport (the gateway tells them when an upstream's tools change)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class Gateway:
    def __init__(
        self, governor: Governor, upstreams: Upstreams, *, default: Identity | None
    ) -> None:
        self.governor = governor
        self.upstreams = upstreams
        self.default = default
        # The API's cache: a token is looked up once, and a revocation, rotation or disabling
        # anywhere is seen within its epoch interval (0.25 s).
        self.tokens = TokenCache()
        # Who hears that the tools changed: 2026-07-28 clients through `subscriptions/listen`
        # streams on this bus, handshake-era ones as a notification on their session.
        self.bus = InMemorySubscriptionBus()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        upstreams.on_change.append(self.tools_changed)
        self.server: Server[Any] = _Server(
            f"warden-{governor.config.gateway}",
            version="1",
            instructions=(
                "Tool calls pass through Warden: some run at once, some are refused with the "
                "reason, some wait for a person. A held call answers with a decision id; call "
                f'the same tool again with the same arguments and _meta {{"{DECISION_META}": id}}.'
            ),
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=ListenHandler(self.bus),
        )

    # -- identity --------------------------------------------------------------------------

    def identify(self, ctx: ServerRequestContext[Any]) -> Identity | None:
        headers = getattr(ctx.request, "headers", None)
        if headers is not None:
            auth = headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                secret = auth[7:].strip()
                if not secret:
                    return None
                return _identity(self.tokens.lookup(self.governor.engine, secret))
            return self.default
        return self.default

    # -- the tools changed upstream --------------------------------------------------------

    async def tools_changed(self) -> None:
        """Tell every client that the tool list changed, so it lists the tools again."""
        await self.bus.publish(ToolsListChanged())
        for session in list(self._sessions):
            try:
                await session.send_tool_list_changed()
            except Exception:  # a closed or 2026-07-28 session: it has the bus
                self._sessions.discard(session)

    def _remember(self, ctx: ServerRequestContext[Any]) -> None:
        """Keep a handshake-era client's connection (weakly) to notify it later. Its session
        object lives for one request, the connection as long as the client stays."""
        if ctx.protocol_version >= LISTEN_ERA:
            return  # it hears through `subscriptions/listen`
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None and hasattr(connection, "send_tool_list_changed"):
            self._sessions.add(connection)

    # -- handlers --------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        who = self.identify(ctx)
        if who is None:
            return types.ListToolsResult(tools=[])
        return types.ListToolsResult(
            tools=[
                entry.tool
                for entry in self.upstreams.catalog.values()
                if self._visible(who, entry.server, entry.tool)
            ]
        )

    def _visible(self, who: Identity, server: str, tool: types.Tool) -> bool:
        config = self.governor.config
        rule = config.rule_for(server, tool.name)
        if rule is None:
            return False  # ungoverned tools are refused, so they are not offered
        if not rule.hide_refused:
            return True
        compiled = self.governor.engine.points.get(rule.point)
        if compiled is None:
            return False
        call = _tool_call(who, server, tool, {}, {})
        routing = route(
            compiled,
            decision_id="tools-list",
            input=self.governor.proposal_input(call, rule),
            context={"gateway": {"name": config.gateway, "hold": ""}},
            outcome="execute",
            confidence=1.0,
        )
        return routing.route is not Route.REFUSED

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        traced = trace.arrived()
        trace.mark("handler")
        try:
            return await self._call_tool(ctx, params)
        finally:
            if traced:
                trace.finish(end=True)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self._remember(ctx)
        who = self.identify(ctx)
        if who is None:
            return _error("the gateway needs a valid Warden token (Authorization: Bearer wdn_...)")
        entry = self.upstreams.catalog.get(params.name)
        if entry is None:
            return _error(f"there is no tool '{params.name}'; list the tools to see what exists")
        rule = self.governor.config.rule_for(entry.server, entry.tool.name)
        if rule is not None and not who.may_call(rule.point):
            return _error(
                f"the token of {who.agent} may not call tools governed by '{rule.point}'; it "
                "needs the caller role for that point"
            )
        meta: Mapping[str, Any] = params.meta or {}
        decision_id = meta.get(DECISION_META)
        key = meta.get(KEY_META)
        call = _tool_call(
            who,
            entry.server,
            entry.tool,
            dict(params.arguments or {}),
            meta,
            decision_id=str(decision_id) if decision_id else None,
            idempotency_key=str(key) if key else None,
        )
        token = meta.get("progress_token", meta.get("progressToken"))

        async def progress(done: float, message: str) -> None:
            if token is not None:
                await ctx.session.send_progress_notification(
                    token,
                    done,
                    message=message,
                    related_request_id=None if ctx.request_id is None else str(ctx.request_id),
                )

        async def execute() -> types.CallToolResult:
            trace.mark("sent")
            result = await self.upstreams.call(entry.server, entry.tool.name, call.arguments)
            trace.mark("replied")
            return result

        runner = Runner(
            execute=execute,
            outcome=_outcome,
            describe=lambda: self.upstreams.description(entry.server, entry.tool.name),
            progress=progress,
        )
        answer = await self.governor.call(call, runner)
        return to_result(answer)


def _tool_call(
    who: Identity,
    server: str,
    tool: types.Tool,
    arguments: dict[str, Any],
    meta: Mapping[str, Any],
    *,
    decision_id: str | None = None,
    idempotency_key: str | None = None,
) -> ToolCall:
    hints = tool.annotations
    annotations = {}
    if hints is not None:
        for wire, attr in (
            ("readOnlyHint", "read_only_hint"),
            ("destructiveHint", "destructive_hint"),
            ("idempotentHint", "idempotent_hint"),
            ("openWorldHint", "open_world_hint"),
        ):
            value = getattr(hints, attr, None)
            if value is not None:
                annotations[wire] = bool(value)
    return ToolCall(
        agent=who.agent,
        actor=who.actor,
        server=server,
        tool=tool.name,
        arguments=arguments,
        annotations=annotations,
        description=tool.description,
        decision_id=decision_id,
        idempotency_key=idempotency_key,
    )


def _outcome(result: Any) -> Outcome:
    assert isinstance(result, types.CallToolResult)
    body = json.dumps(
        result.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True
    ).encode()
    error = None
    if result.is_error:
        error = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
    return Outcome(not result.is_error, body, error)


def _error(message: str, **warden: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content={"warden": warden} if warden else None,
        is_error=True,
    )


def to_result(answer: Answer) -> types.CallToolResult:
    """The MCP result an agent gets: the tool's own when it ran, else an error that says why."""
    if answer.status in ("executed", "already_executed") and isinstance(
        answer.result, types.CallToolResult
    ):
        return answer.result
    return _error(
        answer.message,
        status=answer.status,
        decision_id=answer.decision_id,
        point=answer.point,
    )
