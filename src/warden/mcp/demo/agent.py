"""A scripted agent (no language model): it calls the demo bank's tools through the gateway.

Run: python -m warden.mcp.demo.agent GATEWAY.yaml [--wait SECONDS]

It reads a balance (auto), tries to delete a record (refused), asks for a refund (held for a
person) and then asks again with the decision id every few seconds until someone approves or
rejects it in the console (or `warden review approve`), and prints what it was told.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def _info(result: Any) -> dict[str, Any]:
    return dict((result.structured_content or {}).get("warden") or {})


async def act(gateway: Path, wait: float) -> int:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "warden", "mcp", "serve", str(gateway)],
        env=dict(os.environ),
    )
    async with Client(params, read_timeout_seconds=120) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        print(f"tools offered: {', '.join(tools)}")
        result = await client.call_tool("read_balance", {"account": "ACC-1"})
        print(f"read_balance  -> {_text(result)}")
        result = await client.call_tool("delete_record", {"record": "ACC-1"})
        print(f"delete_record -> refused: {_text(result)}")
        args = {"account": "ACC-1", "amount": 120.0}
        result = await client.call_tool("refund", args)
        decision_id = _info(result).get("decision_id")
        print(f"refund        -> {_text(result)}")
        if not decision_id:
            return 1
        print(f"\nApprove it in the console (Reviews), or: warden review approve {decision_id}")
        meta: Any = {"warden/decision_id": decision_id}
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await anyio.sleep(3)
            result = await client.call_tool("refund", args, meta=meta)
            if _info(result).get("status") != "pending":
                print(f"refund        -> {_text(result)}")
                print(f"\nThe chain of this call: warden audit prove {decision_id}")
                return 0 if not result.is_error else 2
        print("nobody decided in time; the call stays held")
        return 3


def main() -> None:
    parser = argparse.ArgumentParser(description="A scripted agent for the gateway demo.")
    parser.add_argument("gateway", type=Path)
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for a person")
    args = parser.parse_args()
    sys.exit(anyio.run(act, args.gateway, args.wait))


if __name__ == "__main__":
    main()
