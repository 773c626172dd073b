"""A small bank as an MCP server, the upstream of the gateway's demo and tests.

Each tool appends a line to the file named by BANK_RAN when it runs, so a test (or you) can tell
whether, and how often, a call reached it. Run: python -m warden.mcp.demo.bank [http PORT]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("bank")
DESCRIPTION = os.environ.get("BANK_REFUND_DESCRIPTION", "Refund an amount to a customer.")


def _ran(tool: str, **arguments: object) -> None:
    path = os.environ.get("BANK_RAN")
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
def read_balance(account: str) -> str:
    """Read an account's balance."""
    _ran("read_balance", account=account)
    return f"balance of {account}: 100.00"


@server.tool(description=DESCRIPTION, annotations=ToolAnnotations(destructive_hint=True))
def refund(account: str, amount: float) -> str:
    _ran("refund", account=account, amount=amount)
    return f"refunded {amount:.2f} to {account}"


@server.tool(annotations=ToolAnnotations(open_world_hint=True, destructive_hint=False))
def send_email(to: str, body: str) -> str:
    """Send an email."""
    _ran("send_email", to=to, body=body)
    return f"sent to {to}"


@server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
def delete_record(record: str) -> str:
    """Delete a record."""
    _ran("delete_record", record=record)
    if record == "missing":
        raise ValueError("no such record")
    return f"deleted {record}"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
