"""An MCP proxy with no governance, the baseline for bench_mcp.py: what one more MCP hop costs
with the SDK's own transports (stdio, or Streamable HTTP served by uvicorn like the gateway).

Run by bench_mcp.py: python benchmarks/bare_mcp_proxy.py [--loop-stdio] UPSTREAM_SCRIPT
                  or python benchmarks/bare_mcp_proxy.py --http PORT UPSTREAM_URL
(`--loop-stdio`: serve stdio as the gateway does, from the event loop, see warden.mcp.stdio)
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

from warden.mcp.stdio import stdio_streams


async def main(args: list[str]) -> None:
    http = args[0] == "--http"
    loop_stdio = args[0] == "--loop-stdio"
    if loop_stdio:
        args = args[1:]
    upstream: Any = args[2] if http else StdioServerParameters(command=sys.executable, args=args)
    async with Client(upstream) as client:

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=(await client.list_tools()).tools)

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await client.call_tool(params.name, params.arguments)

        server: Server[Any] = Server("bare", on_list_tools=list_tools, on_call_tool=call_tool)
        if http:
            app = server.streamable_http_app(host="127.0.0.1")
            config = uvicorn.Config(
                app, host="127.0.0.1", port=int(args[1]), log_level="warning", lifespan="on"
            )
            await uvicorn.Server(config).serve()
            return
        streams = stdio_streams() if loop_stdio else stdio_server()
        async with streams as (read, write):
            await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
