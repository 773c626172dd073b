"""One shadow process per host, shared by all of `warden serve --workers N`'s workers.

Left to themselves, N workers would each start a shadow child: N challengers' models loaded N
times, N processes competing for the one core the server leaves idle. Instead `serve` starts
one before its workers (`ShadowHost`), listening on a Unix socket in a folder only this user
can open, with a random key the workers inherit through the environment; each worker's
courier connects to it (`HostAddress`) as it would talk to a child of its own. The server
restarts the process when it dies; a worker whose connection breaks loses only the calls in
flight and connects again (see `ShadowRunner`). Shadow results stay best effort, never a
decision.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warden.models.base import ModelLoadError
    from warden.models.guard import GuardedModel

log = logging.getLogger(__name__)

ADDRESS_ENV = "WARDEN_SHADOW_ADDRESS"
KEY_ENV = "WARDEN_SHADOW_KEY"
PROCESS_NAME = b"warden-shadow"  # what ps and /proc/<pid>/comm show
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the workers' shared metrics folder: not for us
RESTART_PAUSE = 1.0  # seconds between a death and the restart


@dataclass(frozen=True)
class HostAddress:
    """Where a worker finds the host's shadow process."""

    address: str
    key: bytes

    @classmethod
    def from_env(cls) -> HostAddress | None:
        address, key = os.environ.get(ADDRESS_ENV), os.environ.get(KEY_ENV)
        if not address or not key:
            return None
        try:
            return cls(address, bytes.fromhex(key))
        except ValueError:
            raise ValueError(f"{KEY_ENV} must be hexadecimal, as `warden serve` sets it") from None

    def environ(self) -> dict[str, str]:
        return {ADDRESS_ENV: self.address, KEY_ENV: self.key.hex()}

    def connect(self) -> tuple[Connection, int]:
        """A connection to the shadow process, and that process's id."""
        conn = Client(self.address, family="AF_UNIX", authkey=self.key)
        pid = conn.recv()
        return conn, int(pid)


class ShadowHost:
    """The shadow process of this host, started and kept running by `warden serve`.

    Starting does not wait for it to listen, so the server starts no later for it: a worker
    whose first shadow call comes before then drops its calls for a few seconds (counted)."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="warden-shadow-"))  # mode 0700
        self.address = HostAddress(str(self._folder / "socket"), secrets.token_bytes(32))
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._stop = threading.Event()
        self.restarts = 0
        self._start()
        self._watchdog = threading.Thread(
            target=self._watch, name="warden-shadow-host", daemon=True
        )
        self._watchdog.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._watchdog.join(timeout)
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _start(self) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=serve_host,
            args=(self.address.address, self.address.key, ready, os.getpid()),
            name="warden-shadow",
            daemon=True,
        )
        with _without_env(METRICS_ENV):
            process.start()
        self._process, self._ready = process, ready  # kept: a late child still needs it

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the current shadow process listens; False when it did not in time."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if time.monotonic() > deadline or not self._process.is_alive():
                return False
        return True

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if self._process.is_alive():
                continue
            log.error(
                "the shadow process exited (code %s); starting another in %gs",
                self._process.exitcode,
                RESTART_PAUSE,
            )
            if self._stop.wait(RESTART_PAUSE):
                return
            self.restarts += 1
            self._start()


@contextlib.contextmanager
def _without_env(name: str) -> Iterator[None]:
    """The child inherits the environment as it is at its start: without the workers' metrics
    folder its metrics stay its own, never summed into the server's /metrics. (A worker that
    uvicorn restarts in this very instant would miss the folder too; both restarts are rare.)"""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


# -- the shadow process -------------------------------------------------------------------


def serve_host(address: str, key: bytes, ready: Any, parent: int) -> None:
    """Answer every worker's batches, one batch at a time, with one copy of each model."""
    from warden.rollout.shadow_process import Request, answer, yield_the_cpu

    yield_the_cpu()
    name_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)  # left by a predecessor that died
    listener = Listener(address, family="AF_UNIX", authkey=key)
    ready.set()
    models: dict[str, GuardedModel | ModelLoadError] = {}
    lock = threading.Lock()

    def worker(conn: Connection) -> None:
        with conn:
            conn.send(os.getpid())
            while True:
                batch: list[Request] | None = conn.recv()
                if batch is None:
                    return
                with lock:  # one core's worth: batches take turns
                    answers = [answer(models, request) for request in batch]
                conn.send(answers)

    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError, multiprocessing.AuthenticationError):
            continue  # a stranger, or a worker that went away while connecting
        threading.Thread(target=_quietly, args=(worker, conn), daemon=True).start()


def _quietly(worker: Any, conn: Connection) -> None:
    with contextlib.suppress(OSError, EOFError):  # a worker that stopped or restarted
        worker(conn)


def _exit_with(parent: int) -> None:
    """Stop when the server is gone, even when it was killed before it could stop us."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def name_process() -> None:
    """`warden-shadow` in ps and top, beside the workers."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, PROCESS_NAME, 0, 0, 0)  # PR_SET_NAME
