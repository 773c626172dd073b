"""The gateway's stdio streams, read and written on the event loop: whatever way the bytes are
cut by the pipe, the lines that come out are the lines that went in, and a write larger than
the pipe's buffer waits for the reader instead of failing or losing bytes."""

from __future__ import annotations

import os
import threading

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.mcp.stdio import LineReader, Writer

LINES = st.lists(
    st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=300),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(lines=LINES, cuts=st.lists(st.integers(1, 97), min_size=1, max_size=20), tail=st.booleans())
def test_lines_read_back_whatever_the_chunks(lines: list[str], cuts: list[int], tail: bool) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    if tail:
        data += b"no newline at the end"
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)

    def feed() -> None:
        at, i = 0, 0
        while at < len(data):
            size = cuts[i % len(cuts)]
            os.write(write_fd, data[at : at + size])
            at, i = at + size, i + 1
        os.close(write_fd)

    async def read_all() -> list[str]:
        return [line async for line in LineReader(read_fd)]

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        got = anyio.run(read_all)
    finally:
        writer.join()
        os.close(read_fd)
    expected = [line + "\n" for line in lines] + (["no newline at the end"] if tail else [])
    assert got == expected


def test_a_write_larger_than_the_pipe_waits_for_the_reader() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    text = "".join(f"{i:08d}é" for i in range(100_000)) + "\n"  # ~1 MB, pipes hold 64 KB
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 7000):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()

    async def write() -> None:
        out = Writer(write_fd)
        assert await out.write(text) == len(text)
        await out.flush()

    try:
        anyio.run(write)
    finally:
        os.close(write_fd)
        reader.join()
        os.close(read_fd)
    assert received.decode() == text
