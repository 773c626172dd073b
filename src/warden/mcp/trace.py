"""Where a tool call's time goes inside the gateway: a timestamp at each hand-off.

Off unless `WARDEN_MCP_TRACE` names a file; then every call that reaches a tool appends one
JSON line to it, `{"read": t, "handler": t, ...}` in seconds of the system's monotonic clock
(`time.monotonic`, the same in every process on the machine, so `benchmarks/bench_mcp.py
--breakdown` lines them up with the agent's own send and receive times). The marks, in order:

read        the request's line was read from the agent (stdio; over Streamable HTTP, where
            the SDK reads the request, the handler's start)
handler     the MCP server parsed it and called the gateway's tools/call handler
submit      the decision's change was handed to the group-commit writer
lock        the writer plans the transaction and asks for the call's claim (SQLite: holding
            the ledger lock; PostgreSQL: just before sending it to `warden_append`)
committed   the transaction committed (in the writer thread)
decided     the event loop resumed with the committed decision (the wake-up)
sent        the call is handed to the upstream's client session
replied     the upstream's result is back on the event loop
written     the reply to the agent was written to its pipe (stdio) or the handler returned
            it to the SDK (HTTP)

Marks are kept only for calls one at a time, as a benchmark makes them; concurrent calls
share one record and their lines mean little.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

PATH = os.environ.get("WARDEN_MCP_TRACE") or None
_current: dict[str, float] = {}


def mark(name: str) -> None:
    """Note the time of a hand-off of the call in flight (first occurrence wins)."""
    if PATH is not None:
        _current.setdefault(name, time.monotonic())


def start() -> None:
    """A new request arrived: what was marked before belongs to the previous one."""
    if PATH is not None:
        _current.clear()
        _current["read"] = time.monotonic()


def arrived() -> bool:
    """The handler got a request no line reader marked (Streamable HTTP): mark it now and
    say so, so the handler finishes the record itself."""
    if PATH is None or "read" in _current:
        return False
    _current["read"] = time.monotonic()
    return True


def finish(*, end: bool = False) -> None:
    """The reply went out: append the call's marks, if it reached a tool (`end`: the record
    ends here whether it did or not)."""
    if PATH is None or "replied" not in _current:
        if end:
            _current.clear()
        return
    _current.setdefault("written", time.monotonic())
    line = json.dumps(_current) + "\n"
    _current.clear()
    with open(PATH, "a") as out:
        out.write(line)


def watch_recorder(recorder: Any) -> None:
    """Mark `submit` and `committed` on the engine's writer (an instance attribute, only when
    tracing). `committed` is the change's first callback, so it runs before the one that
    wakes the event loop."""
    if PATH is None:
        return
    submit = recorder.submit

    def traced(change: Any) -> Any:
        mark("submit")
        future = submit(change)
        future.add_done_callback(lambda _: mark("committed"))
        return future

    recorder.submit = traced
