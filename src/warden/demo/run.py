"""`warden demo`: a credit decision point working end to end, from one command."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live

from warden.api.app import create_app
from warden.demo import screen
from warden.demo.server import BackgroundServer, DemoError, bind
from warden.demo.setup import prepare, reset
from warden.demo.traffic import LOCALHOST, Traffic, TrafficCounts
from warden.ledger.checkpointer import Checkpointer
from warden.monitor.observer import attach
from warden.monitor.worker import Monitor
from warden.review.desk import ReviewDesk
from warden.review.runtime import review_workers
from warden.rollout.controller import RolloutWorker

MAX_TRAFFIC_SECONDS = 3600.0  # without --duration traffic still stops; the server stays up
DRIFT_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class DemoSummary:
    routes: dict[str, int]
    total: int
    errors: int
    outcomes_recorded: int
    url: str
    home: Path


def run_demo(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    duration: float | None = None,
    rate: float = 20.0,
    console: Console | None = None,
    fresh: bool = False,
) -> DemoSummary:
    """Prepare `home`, serve the API on host:port and send it traffic until `duration` ends
    (or Ctrl-C when it is None). Problems are printed, then raised as DemoError.
    `fresh` forgets earlier runs first (their data, alerts and kill switches), keeping the
    point file.
    """
    console = console or Console()
    try:
        return _run(home.expanduser().resolve(), host, port, duration, rate, console, fresh)
    except DemoError as error:
        console.print(f"[red]warden demo:[/red] {error.message}", highlight=False)
        raise


def _run(
    home: Path,
    host: str,
    port: int,
    duration: float | None,
    rate: float,
    console: Console,
    fresh: bool,
) -> DemoSummary:
    if rate <= 0:
        raise DemoError(
            f"--rate is {rate:g}; send at least a fraction of a decision per second", field="rate"
        )
    if duration is not None and duration <= 0:
        raise DemoError(
            f"--duration is {duration:g}; give a positive number of seconds", field="duration"
        )
    sock = bind(host, port)  # before the slow steps, so a taken port fails at once
    try:
        if fresh:
            reset(home)
        with console.status("Training the credit model and preparing the demo..."):
            setup = prepare(home)
    except BaseException:
        sock.close()
        raise
    try:
        attach(setup.engine)  # metrics and protective actions; the monitor runs beside review
        desk = ReviewDesk(setup.engine)
        monitor = Monitor(setup.engine)
        app = create_app(
            setup.engine,
            desk=desk,
            workers=[
                *review_workers(desk),
                monitor,
                RolloutWorker(setup.engine),
                Checkpointer.from_env(setup.engine.db, home),  # as `warden serve` signs
            ],
        )
        server = BackgroundServer(app, sock)
        shown_host = LOCALHOST if host in ("0.0.0.0", "::") else host
        url = f"http://{shown_host}:{server.port}"
        server.start(f"http://{LOCALHOST}:{server.port}/readyz")
        try:
            drift_after = int(rate * DRIFT_AFTER_SECONDS)
            screen.intro(console, setup, url=url, rate=rate, drift_after=drift_after)
            if host in ("0.0.0.0", "::"):
                console.print(
                    "[yellow]The API listens on every network interface; anyone "
                    "who can reach this machine can use the tokens above.[/yellow]"
                )
            counts = _send_traffic(
                console,
                server.port,
                setup.caller_token,
                rate=rate,
                duration=duration,
                drift_after=drift_after,
            )
        finally:
            server.stop()
    finally:
        setup.close()
    screen.totals(console, setup, counts)
    return DemoSummary(
        routes=counts.routes,
        total=counts.total,
        errors=counts.errors,
        outcomes_recorded=counts.outcomes,
        url=url,
        home=home,
    )


def _send_traffic(
    console: Console,
    port: int,
    token: str,
    *,
    rate: float,
    duration: float | None,
    drift_after: int,
) -> TrafficCounts:
    """Run traffic with a live table; without a duration keep serving until Ctrl-C."""
    traffic = Traffic(
        port, token, rate=rate, duration=duration or MAX_TRAFFIC_SECONDS, drift_after=drift_after
    )
    hint = "press Ctrl-C to stop" if duration is None else f"running for {duration:g} s"
    traffic.start()
    try:
        with Live(
            screen.live_table(traffic.counts()), console=console, refresh_per_second=4
        ) as live:
            while not traffic.wait(0.25):
                live.update(
                    screen.live_table(traffic.counts(), title=f"Decisions by route ({hint})")
                )
            live.update(screen.live_table(traffic.counts()))
        if duration is None:
            console.print(
                "\nDemo traffic is over; the API stays up for your own calls until Ctrl-C."
            )
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("\nStopping...")
    finally:
        traffic.stop()
    return traffic.counts()
