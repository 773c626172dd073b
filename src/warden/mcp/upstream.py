"""Connections to the upstream MCP servers and the catalog of their tools.

The catalog follows the upstreams: when one says its tools changed (`notifications/tools/
list_changed` on a handshake-era connection, a `subscriptions/listen` event on a 2026-07-28
one), its tools are read again and the gateway is told (`on_change`), so it offers the new list
and new calls propose the new descriptions (which approvals bind to).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.session import MessageHandlerFnT
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.client.subscriptions import ListenNotSupportedError

from warden.errors import PolicyError, Unavailable
from warden.mcp.config import GatewayConfig, Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogTool:
    server: str
    tool: types.Tool


class Upstreams:
    """One client session per upstream server, opened for the gateway's lifetime."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.clients: dict[str, Client] = {}
        self.catalog: dict[str, CatalogTool] = {}
        self.on_change: list[Callable[[], Awaitable[None]]] = []
        self._stack = AsyncExitStack()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stale: set[str] = set()
        self._refreshing = asyncio.Lock()

    async def __aenter__(self) -> Upstreams:
        try:
            for name, upstream in self.config.upstreams.items():
                client = Client(
                    _target(upstream, self.config.source), message_handler=self._handler(name)
                )
                try:
                    self.clients[name] = await self._stack.enter_async_context(client)
                except Exception as exc:
                    raise Unavailable(
                        f"cannot connect to the upstream server '{name}': {exc}; check its "
                        "command or url in the gateway file",
                        field=f"upstreams.{name}",
                    ) from exc
            await self.refresh()
            for name, client in self.clients.items():
                self._spawn(self._listen(name, client))
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._close()

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    # -- following the upstreams' tool lists -------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handler(self, name: str) -> MessageHandlerFnT:
        async def handle(message: Any) -> None:
            # Called inside the session's receive loop: reading the tools from here would wait
            # on that very loop, so the refresh runs beside it.
            if isinstance(message, types.ToolListChangedNotification):
                self._spawn(self.changed(name))

        return handle

    async def _listen(self, name: str, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as events:
                async for _ in events:
                    self._spawn(self.changed(name))
        except ListenNotSupportedError:
            return  # a handshake-era server: it notifies through the message handler
        except Exception as exc:
            log.warning("stopped following the tool list of upstream '%s': %s", name, exc)

    async def changed(self, name: str) -> None:
        """The upstream `name` says its tools changed: read them again and, if they did, tell
        the gateway. Changes arriving during a read are read again after it."""
        self._stale.add(name)
        async with self._refreshing:
            if name not in self._stale:
                return  # read by a refresh that started after this change
            self._stale.discard(name)
            try:
                moved = await self._refresh_server(name)
            except Exception as exc:
                log.warning("cannot read the tools of upstream '%s' again: %s", name, exc)
                return
        if moved:
            for listener in self.on_change:
                try:
                    await listener()
                except Exception as exc:
                    log.warning("telling clients the tools changed failed: %s", exc)

    async def _refresh_server(self, name: str) -> bool:
        """Replace `name`'s tools in the catalog; True if the offered tools changed. A new tool
        whose name another upstream already offers is left out (and logged), never swapped."""
        tools = await _all_tools(self.clients[name])
        catalog = {k: v for k, v in self.catalog.items() if v.server != name}
        for tool in tools:
            if tool.name in catalog:
                log.warning(
                    "upstream '%s' now offers '%s', which '%s' already offers; left out",
                    name,
                    tool.name,
                    catalog[tool.name].server,
                )
                continue
            catalog[tool.name] = CatalogTool(name, tool)
        moved = catalog != self.catalog
        self.catalog = catalog
        return moved

    async def refresh(self) -> None:
        """Read every upstream's tools; the same tool name on two servers is refused."""
        catalog: dict[str, CatalogTool] = {}
        for name, client in self.clients.items():
            for tool in await _all_tools(client):
                if tool.name in catalog:
                    raise PolicyError(
                        f"the tool '{tool.name}' is offered by both '{catalog[tool.name].server}' "
                        f"and '{name}'; run one gateway per server, or rename one of them",
                        file=self.config.source or "gateway",
                    )
                catalog[tool.name] = CatalogTool(name, tool)
        self.catalog = catalog

    async def description(self, server: str, tool: str) -> str | None:
        """The tool's description as the upstream states it now (a rug-pull shows here)."""
        for found in await _all_tools(self.clients[server]):
            if found.name == tool:
                return found.description
        return None

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return await self.clients[server].call_tool(tool, arguments)


async def _all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(1000):  # bounded: a server that pages forever is not trusted to end
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _target(upstream: Upstream, source: str) -> Any:
    if upstream.url is not None:
        if upstream.headers:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(
                upstream.url, http_client=httpx2.AsyncClient(headers=upstream.headers)
            )
        return upstream.url
    assert upstream.command is not None
    cwd = upstream.cwd
    if source:  # relative paths in the command are relative to the gateway file
        cwd = str(Path(source).parent / (cwd or "."))
    return StdioServerParameters(
        command=upstream.command,
        args=upstream.args,
        env={**get_default_environment(), **upstream.env},
        cwd=cwd,
    )
