"""stdin and stdout for the MCP stdio transport, read and written on the event loop.

The SDK's `stdio_server` wraps the standard streams with `anyio.wrap_file`, which hands every
line read, every write and every flush to a worker thread: three thread hand-offs per tool
call, each a wake-up that waits for a core on a busy machine. When both streams are pipes or
sockets (as when an agent launches the gateway), these serve them non-blocking from the event
loop instead; otherwise (a terminal, a file) the SDK's own streams are used. As the SDK does,
fd 0 and fd 1 are pointed at /dev/null and stderr while serving, so nothing else in the
process (a stray print, a child process) can write into the protocol stream.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
from mcp.server.stdio import stdio_server

from warden.mcp import trace

CHUNK = 1 << 16


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class LineReader:
    """Lines of a non-blocking descriptor, as the SDK reads them (text with its newline)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._eof = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                trace.start()
                return line.decode("utf-8", errors="replace")
            if self._eof:
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line.decode("utf-8", errors="replace")
                raise StopAsyncIteration
            try:
                chunk = os.read(self.fd, CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
                continue
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True


class Writer:
    """Writes to a non-blocking descriptor; `flush` has nothing left to do."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, text: str) -> int:
        data = memoryview(text.encode("utf-8"))
        while data:
            try:
                sent = os.write(self.fd, data)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            data = data[sent:]
        trace.finish()
        return len(text)

    async def flush(self) -> None:
        return None


@contextmanager
def _claimed() -> Iterator[tuple[int, int]]:
    """Private non-blocking duplicates of fd 0 and 1; fd 0 reads /dev/null and fd 1 goes to
    stderr meanwhile. All restored on exit."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    saved = [os.get_blocking(wire_in), os.get_blocking(wire_out)]
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.set_blocking(wire_in, False)
        os.set_blocking(wire_out, False)
        yield wire_in, wire_out
    finally:
        os.set_blocking(wire_in, saved[0])
        os.set_blocking(wire_out, saved[1])
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
        for fd in (null, wire_in, wire_out):
            os.close(fd)


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any]]:
    """The MCP read and write streams over stdin and stdout."""
    if not (_is_pipe(0) and _is_pipe(1)):
        async with stdio_server() as streams:
            yield streams
        return
    with _claimed() as (wire_in, wire_out):
        async with stdio_server(LineReader(wire_in), Writer(wire_out)) as streams:  # type: ignore[arg-type]
            yield streams
