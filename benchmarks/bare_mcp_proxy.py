"""An MCP proxy with no governance, the baseline for bench_mcp.py: what one more MCP hop costs.

Run by bench_mcp.py: python benchmarks/bare_mcp_proxy.py UPSTREAM_SCRIPT
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server


async def main(script: str) -> None:
    upstream = StdioServerParameters(command=sys.executable, args=[script])
    async with Client(upstream) as client:

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=(await client.list_tools()).tools)

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await client.call_tool(params.name, params.arguments)

        server: Server[Any] = Server("bare", on_list_tools=list_tools, on_call_tool=call_tool)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
