"""What the demo prints: what happens, how to try it, and decisions by route as they come."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import orjson
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from warden.decision import Route
from warden.demo.point import POINT
from warden.demo.setup import CHALLENGER, EXAMPLE, DemoSetup
from warden.demo.traffic import TrafficCounts

COLORS = {
    Route.AUTO: "green",
    Route.REVIEW: "yellow",
    Route.FALLBACK: "magenta",
    Route.REFUSED: "red",
}
MEANING = {
    Route.AUTO: "decided by the model alone",
    Route.REVIEW: "waiting for a credit officer",
    Route.FALLBACK: "safe outcome after a model failure",
    Route.REFUSED: "refused by a rule or the input schema",
}


def intro(
    console: Console, setup: DemoSetup, *, url: str, rate: float, drift_after: int | None
) -> None:
    point = setup.engine.points[POINT]
    model = setup.model
    console.print(
        Panel.fit(
            "[bold]Warden demo[/bold]: a credit model deciding loan applications, governed by "
            "Warden.\nEvery decision passes the policy below and is recorded in a hash-chained "
            "ledger.",
            border_style="cyan",
        )
    )
    console.print(
        f"[bold]1. Model[/bold]  logistic regression trained on {model.trained_on:,} synthetic "
        f"applications, holdout accuracy {model.accuracy:.1%}, saved to {_rel(model.path)}",
        highlight=False,
    )
    edited = " [yellow](your edited copy)[/yellow]" if setup.point_edited else ""
    console.print(
        f"[bold]2. Decision point[/bold]  {POINT}, owner {point.spec.owner}: "
        f"{_rel(setup.point_file)}{edited}",
        highlight=False,
    )
    console.print(_rules(setup), highlight=False)
    _inherited(console, setup)
    console.print(
        f"[bold]3. API[/bold]  {url}  (docs: [link={url}/docs]{url}/docs[/link]); "
        f"state and ledger in {_rel(setup.database)}",
        highlight=False,
    )
    drift = (
        f"; from application {drift_after:,} on, incomes drop by a quarter (input drift)"
        if drift_after
        else ""
    )
    console.print(
        f"[bold]4. Traffic[/bold]  ~{rate:g} applications/s from 4 threads; ground "
        f"truth follows for 30% of them after 2 s{drift}",
        highlight=False,
    )
    console.print()
    console.print("[bold]Tokens[/bold] (only their hashes are stored; these are shown once)")
    console.print(f"  caller ({POINT}):  {setup.caller_token}", highlight=False, soft_wrap=True)
    console.print(f"  admin (all points):   {setup.admin_token}", highlight=False, soft_wrap=True)
    console.print(f"  reviewer ({POINT}): {setup.reviewer_token}", highlight=False, soft_wrap=True)
    console.print(
        f"[bold]Review console[/bold]  {url}/console: log in with the reviewer token to "
        "decide the applications waiting for a credit officer.",
        highlight=False,
    )
    console.print()
    console.print("[bold]Try it[/bold] (run it twice: same Idempotency-Key, same decision):")
    console.print(
        curl_example(url, setup.caller_token), markup=False, highlight=False, soft_wrap=True
    )
    console.print()
    env = environment(setup)
    warden = warden_command()
    console.print(
        "In another terminal, from this folder, set where the demo keeps its data (every "
        "command below needs it):",
        highlight=False,
    )
    console.print(f"  export {env}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"Then decide in-process, on the same data:\n  {warden} decide {POINT} "
        f"--input {shlex.quote(orjson.dumps(EXAMPLE).decode())}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"A challenger model, {CHALLENGER}, is registered. Roll it out to a growing share of "
        f"traffic (it is rolled back on its own if it errs or disagrees too much):\n"
        f"  {warden} rollout start {POINT} --challenger {CHALLENGER} --steps 10,50,100 "
        f"--interval 1m --min-decisions 100\n"
        f"  {warden} rollout status {POINT}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print()


def warden_command() -> str:
    """`warden` as the user can type it here: bare when that is on the PATH and is this very
    installation, else its path (`.venv/bin/warden` after `make demo`)."""
    installed = Path(sys.executable).parent / "warden"
    on_path = shutil.which("warden")
    if not installed.is_file() or (
        on_path is not None and Path(on_path).resolve() == installed.resolve()
    ):
        return "warden"
    shown = _rel(installed)
    return shlex.quote(str(installed) if shown.startswith("..") else shown)


def environment(setup: DemoSetup) -> str:
    """The variables that point `warden` commands at the demo's data."""
    return (
        f"WARDEN_HOME={shlex.quote(_rel(setup.home))} "
        f"WARDEN_CONFIG={shlex.quote(_rel(setup.config))}"
    )


def _inherited(console: Console, setup: DemoSetup) -> None:
    """Protections left engaged by an earlier run, said loudly: they change every route."""
    if not setup.inherited:
        return
    warden = warden_command()
    lines = [
        "[bold]Left engaged by an earlier run: every decision goes to review[/bold] until a "
        "person lifts it (monitoring may show no drift now; the protection still holds):"
    ]
    for item in setup.inherited:
        lines.append(f"  • {escape(item.why)}")
    console.print(
        Panel("\n".join(lines), border_style="red", title="inherited protection"),
        highlight=False,
    )
    env = environment(setup)
    commands = []
    for item in setup.inherited:
        if item.alert_id:
            commands.append(
                f"  {env} {warden} monitor resolve {item.alert_id} --reason 'checked the drift'"
            )
        else:
            target = "--all" if item.scope == "*" else POINT
            commands.append(f"  {env} {warden} resume {target} --reason 'checked'")
    console.print("[red]Lift it[/red] in another terminal:", highlight=False)
    for command in commands:  # whole lines, so that they paste as they are
        console.print(command, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"[red]Or start afresh[/red] (the point file is kept): {escape(warden)} demo --fresh",
        highlight=False,
        soft_wrap=True,
    )


def curl_example(url: str, token: str) -> str:
    body = orjson.dumps({"point": POINT, "input": EXAMPLE}).decode()
    return (
        f"curl -s {url}/v1/decisions \\\n"
        f"  -H 'Authorization: Bearer {token}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        "  -H 'Idempotency-Key: my-first-decision' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def _rules(setup: DemoSetup) -> Table:
    spec = setup.engine.points[POINT].spec
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 4))
    for kind, rule in spec.rules.all():
        color = {"refuse": "red", "review": "yellow", "auto": "green"}[kind]
        table.add_row(f"[{color}]{kind}[/{color}]", rule.id, Text(rule.when))
    rate = spec.sampling.review_rate
    table.add_row(
        "[yellow]review[/yellow]", "audit_sample", Text(f"{rate:.0%} of would-be auto decisions")
    )
    table.add_row("[yellow]review[/yellow]", "(default)", Text("when no rule matches"))
    return table


def live_table(counts: TrafficCounts, *, title: str = "Decisions by route") -> Group:
    table = Table(title=title, title_justify="left", min_width=60)
    table.add_column("route")
    table.add_column("decisions", justify="right")
    table.add_column("share", justify="right")
    table.add_column("meaning", style="dim")
    total = counts.total
    for route in Route:
        n = counts.routes.get(route.value, 0)
        share = f"{n / total:.0%}" if total else "-"
        color = COLORS[route]
        table.add_row(f"[{color}]{route.value}[/{color}]", f"{n:,}", share, MEANING[route])
    per_second = total / counts.elapsed if counts.elapsed > 0 else 0.0
    status = Text(
        f"{total:,} decisions in {counts.elapsed:.0f} s ({per_second:.1f}/s) · "
        f"{counts.invalid:,} refused by the input schema · ground truth for "
        f"{counts.outcomes:,} · errors {counts.errors:,}",
        style="dim",
    )
    parts: list[Table | Text] = [table, status]
    if counts.last_error:
        parts.append(Text(f"last error: {counts.last_error}", style="red"))
    return Group(*parts)


def totals(console: Console, setup: DemoSetup, counts: TrafficCounts) -> None:
    console.print()
    console.print(
        f"[bold]Stopped.[/bold] {counts.total:,} decisions, ground truth for "
        f"{counts.outcomes:,}, {counts.errors:,} errors.",
        highlight=False,
    )
    console.print(
        f"Everything is recorded in {_rel(setup.database)}; run `{warden_command()} demo` "
        f"again to continue (`--fresh` to start over), or edit the rules in "
        f"{_rel(setup.point_file)} first and watch the routes change.",
        highlight=False,
        soft_wrap=True,
    )


def _rel(path: os.PathLike[str]) -> str:
    """Paths relative to where the user stands are shorter to read and to copy."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return os.fspath(path)
