"""Connections to the upstream MCP servers and the catalog of their tools."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, get_default_environment

from warden.errors import PolicyError, Unavailable
from warden.mcp.config import GatewayConfig, Upstream


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
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Upstreams:
        try:
            for name, upstream in self.config.upstreams.items():
                client = Client(_target(upstream, self.config.source))
                try:
                    self.clients[name] = await self._stack.enter_async_context(client)
                except Exception as exc:
                    raise Unavailable(
                        f"cannot connect to the upstream server '{name}': {exc}; check its "
                        "command or url in the gateway file",
                        field=f"upstreams.{name}",
                    ) from exc
            await self.refresh()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.aclose()

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
