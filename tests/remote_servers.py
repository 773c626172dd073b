"""Small HTTP servers on 127.0.0.1 that answer as a model server would, for the remote kind's
tests: real sockets, real HTTP/1.1 keep-alive, answers chosen by the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (path, decoded body) -> (status, body); a dict or list body is sent as JSON, bytes as they are.
Responder = Callable[[str, Any], tuple[int, Any]]


@dataclass
class FakeServer:
    url: str
    requests: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)  # client ports seen: one per connection
    responder: Responder = lambda path, body: (404, {"error": "no responder"})
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def fake_server(responder: Responder) -> Iterator[FakeServer]:
    state = FakeServer(url="", responder=responder)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be seen

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            body = json.loads(raw) if raw else None
            with lock:
                state.requests.append((self.path, body, dict(self.headers)))
                state.connections.add(self.client_address[1])
            status, answer = state.responder(self.path, body)
            if status == 0:  # hang until the test releases it (bounded), then answer nothing
                state.release.wait(10)
                status, answer = 500, {"error": "released"}
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def chat_answer(content: str, tokens: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """An OpenAI chat completion whose reply is `content`, with logprobs where tokens are given."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    }
    if tokens is not None:
        choice["logprobs"] = {
            "content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                for t, lp in tokens
            ]
        }
    return {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]}
