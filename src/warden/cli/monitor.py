"""`warden monitor status|run|resolve|export-rules` and `warden report`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from warden.cli import context
from warden.engine import Engine
from warden.errors import PolicyError, WardenError

monitor_app = typer.Typer(
    no_args_is_help=True, help="Drift, alert rules and protective actions of decision points."
)
out = Console()
err = Console(stderr=True)
PROGRESS_FROM = 20_000  # decisions; fewer are read before a bar would be worth drawing

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Folder of decision point files (default: $WARDEN_CONFIG or ./points).",
    ),
]


def _fail(error: WardenError) -> typer.Exit:
    if isinstance(error, PolicyError):
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
    else:
        sys.stderr.write(orjson.dumps(error.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return typer.Exit(1)


def _engine(config: Path | None) -> Engine:
    try:
        return context.open_engine(context.settings(config))
    except PolicyError as error:
        raise _fail(error) from None


@monitor_app.command("status")
def status(
    point: Annotated[str | None, typer.Argument(help="One decision point (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the health as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Health of each decision point: status, latest window, drift, open alerts, protections."""
    from warden.monitor.health import point_health

    engine = _engine(config)
    broken = [*engine.broken.values(), *engine.unnamed_broken]
    if point:
        broken = [b for b in broken if b.name == point]
    try:
        names = [point] if point and not broken else [] if point else sorted(engine.points)
        found = [point_health(engine, name, windows=1) for name in names]
    except WardenError as error:
        raise _fail(error) from None
    finally:
        engine.close()
    found += [{"point": b.name, "status": "unavailable", "error": b.to_dict()} for b in broken]
    if as_json:
        sys.stdout.write(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    colors = {"critical": "red", "warning": "yellow", "ok": "green"}
    for health in found:
        if health["status"] == "unavailable":
            problem = health["error"]
            out.print(
                f"[bold]{health['point'] or problem['file']}[/bold]  [red]UNAVAILABLE[/red]  "
                f"did not load, not served: {problem['location']}: {problem['message']}",
                highlight=False,
                soft_wrap=True,
            )
            continue
        color = colors.get(health["status"], "white")
        latest = health["latest"]
        if latest is None:
            window = "no window closed yet"
        else:
            drift = latest["drift"]
            drifted = [c["column"] for c in drift["columns"] if c["drifted"]]
            window = f"last window {_ago(latest['closed_at'])}, {latest['decisions']} decisions"
            if drift["share"] is not None:
                window += f", drift {drift['share']:.0%}"
                window += f" ({', '.join(drifted)})" if drifted else ""
        out.print(
            f"[bold]{health['point']}[/bold]  [{color}]{health['status'].upper()}[/{color}]  "
            f"{window}",
            highlight=False,
            soft_wrap=True,
        )
        for alert in health["alerts"]:
            value = "no data" if alert["value"] is None else f"{alert['value']:.4g}"
            out.print(
                f"  alert {alert['rule']} {alert['state']} ({alert['severity']}): "
                f"{alert['metric']} = {value} {alert['op']} {alert['threshold']:g}  "
                f"id {alert['id']}",
                highlight=False,
                soft_wrap=True,
            )
        if health["killed"]:
            out.print("  kill switch ENGAGED: no decision is auto", highlight=False)
        for held in health["tightened"]:
            out.print(
                f"  tightened by {held['rule']}: every decision goes to review until a person "
                f"resolves alert {held['alert_id']}",
                highlight=False,
                soft_wrap=True,
            )


def _ago(stamp: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


@monitor_app.command("run")
def run(
    once: Annotated[bool, typer.Option(help="One cycle, then exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between cycles.")] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Run the monitor in the foreground (`warden serve` already runs it beside the API)."""
    from warden.monitor.worker import Monitor

    engine = _engine(config)
    monitor = Monitor(engine, interval=interval)
    try:
        monitor.poll()
        if not monitor.leading:
            err.print("another process holds the monitor lease; this one only follows")
        while not once:
            time.sleep(interval)
            monitor.poll()
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()
        engine.close()
    closed = sum(p.next_seq - 1 for p in monitor.points.values())
    out.print(f"monitor: events read up to {monitor.cursor}; {closed} windows closed in total")


@monitor_app.command("resolve")
def resolve(
    alert_id: Annotated[
        str, typer.Argument(help="The alert id (see `warden monitor status --json`).")
    ],
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")],
    config: ConfigOption = None,
) -> None:
    """Resolve an alert as a person: the episode closes and a `tighten` it holds is lifted."""
    from warden.monitor.worker import resolve_alert

    engine = _engine(config)
    try:
        alert = resolve_alert(engine, alert_id, actor=context.actor(), reason=reason)
    except WardenError as error:
        raise _fail(error) from None
    finally:
        engine.close()
    out.print(
        f"alert [bold]{alert['rule']}[/bold] on {alert['point']} is {alert['state']} "
        f"(by {alert['resolved_by']}); protections it held are lifted",
        highlight=False,
    )


@monitor_app.command("export-rules")
def export_rules(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write the points' alert rules as Prometheus alerting rules (for Alertmanager)."""
    from warden.monitor.rules import rules_yaml
    from warden.policy.loader import load_points

    try:
        points = load_points(context.settings(config).config)
    except PolicyError as error:
        raise _fail(error) from None
    text = rules_yaml(points.values())
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    rules = text.count("- alert:")
    err.print(f"wrote {rules} Prometheus alerting rules to {output}", highlight=False)


def report(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    since: Annotated[str, typer.Option(help="Start of the period: 30d, 12h or a date.")] = "30d",
    output: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    config: ConfigOption = None,
) -> None:
    """A self-contained HTML report of a decision point over a period, for owners and auditors."""
    from warden.errors import NotFound
    from warden.monitor.report import render, since_ago
    from warden.policy.loader import load_points

    try:
        start = since_ago(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    settings = context.settings(config)
    try:
        points = load_points(settings.config)
    except PolicyError as error:
        raise _fail(error) from None
    if point not in points:
        known = ", ".join(sorted(points)) or "(none)"
        raise _fail(NotFound(f"no decision point '{point}'; known points: {known}", field="point"))
    db = context.database(settings)
    try:
        with Progress(
            TextColumn("reading decisions"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task: Any = None

            def progress(done: int, total: int) -> None:
                nonlocal task
                if total < PROGRESS_FROM:
                    return
                if task is None:
                    task = bar.add_task("decisions", total=total)
                bar.update(task, completed=done)

            html = render(db, points[point], since=start, progress=progress)
    finally:
        db.dispose()
    output.write_text(html, encoding="utf-8")
    err.print(f"wrote the report for {point} since {start:%Y-%m-%d %H:%M} UTC to {output}")
