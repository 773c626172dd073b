"""`warden rollout`: start, watch and steer shadow and canary rollouts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from warden.cli import context
from warden.errors import PolicyError, WardenError
from warden.rollout.comparison import compare
from warden.rollout.controller import RolloutController
from warden.rollout.plan import RolloutPlan
from warden.rollout.registry import Registry
from warden.rollout.rollouts import Mode, Rollout, Rollouts, State
from warden.store.recorder import Recorder

rollout_app = typer.Typer(no_args_is_help=True, help="Shadow and canary rollouts.")
out = Console()
err = Console(stderr=True)

ReasonOption = Annotated[str, typer.Option(help="Why; recorded in the ledger.")]


@contextmanager
def _rollouts() -> Iterator[Rollouts]:
    settings = context.settings()
    db = context.database(settings)
    recorder = Recorder(db)
    try:
        yield Rollouts(db, recorder, Registry(db, recorder, settings.model_cache))
    except WardenError as error:
        err.print(f"[red]{error.type}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        recorder.close()
        db.dispose()


def _plan(
    plan_file: Path | None, steps: str | None, interval: str | None, min_decisions: int | None
) -> RolloutPlan:
    data: dict[str, object] = {}
    if plan_file is not None:
        loaded = yaml.safe_load(plan_file.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{plan_file} must be a YAML mapping (steps:, checks:...)")
        data.update(loaded)
    if steps is not None:
        try:
            data["steps"] = [float(s) for s in steps.split(",")]
        except ValueError:
            raise typer.BadParameter("--steps is a list of percentages, e.g. 5,25,50,100") from None
    if interval is not None:
        data["interval"] = interval
    if min_decisions is not None:
        data["min_decisions"] = min_decisions
    try:
        return RolloutPlan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "plan"
        raise typer.BadParameter(f"{where}: {first['msg']}") from None


def _show(rollout: Rollout) -> None:
    """The rollout's state, then (on its own line, with its time) why it last changed: that
    verdict is about the moment of the change, not about now."""
    head = f"[bold]{rollout.point}[/bold] {rollout.mode} rollout {rollout.id}: "
    if rollout.state is State.PROMOTED:
        body = f"[bold]promoted[/bold]: {rollout.challenger} is champion (was {rollout.champion})."
    else:
        body = (
            f"[bold]{rollout.state}[/bold], challenger {rollout.challenger} at "
            f"{rollout.percent:g}% (step {rollout.step + 1} of {len(rollout.plan.steps)}), "
            f"champion {rollout.champion}."
        )
    out.print(head + body, highlight=False, soft_wrap=True)
    if rollout.reason:
        out.print(
            f"  {rollout.state} at {_clock(rollout.updated_at)} because: {rollout.reason}",
            highlight=False,
            soft_wrap=True,
        )


def _clock(moment: datetime) -> str:
    """A moment as people read it: local wall-clock time, with the date when not today."""
    local = moment.astimezone()
    today = datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M:%S")


@rollout_app.command("start")
def start(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    challenger: Annotated[str, typer.Option(help="A registered model version.")],
    mode: Annotated[
        Mode,
        typer.Option(
            help="canary: it decides for a share of traffic; shadow: it only answers copies."
        ),
    ] = Mode.CANARY,
    plan: Annotated[
        Path | None,
        typer.Option(help="YAML plan: steps, interval, min_decisions, sticky_key, checks."),
    ] = None,
    steps: Annotated[str | None, typer.Option(help="e.g. 5,25,50,100")] = None,
    interval: Annotated[str | None, typer.Option(help="Per step, e.g. 10m.")] = None,
    min_decisions: Annotated[int | None, typer.Option(help="Per step before judging.")] = None,
    reason: ReasonOption = "",
) -> None:
    """Start a rollout of a registered version against the champion."""
    from warden.policy.loader import load_points

    try:
        compiled = load_points(context.settings().config).get(point)
    except PolicyError as error:
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if compiled is None:
        err.print(f"no decision point '{point}'")
        raise typer.Exit(1)
    chosen = _plan(plan, steps, interval, min_decisions)
    with _rollouts() as rollouts:
        _show(
            rollouts.start(
                compiled,
                challenger=challenger,
                mode=mode,
                plan=chosen,
                actor=context.actor(),
                reason=reason,
            )
        )


@rollout_app.command("status")
def status(point: Annotated[str, typer.Argument(help="Decision point.")]) -> None:
    """The rollout, and how its current step is judged right now."""
    with _rollouts() as rollouts:
        rollout = rollouts.latest(point)
        _show(rollout)
        if not rollout.active:
            return
        judgement = RolloutController(rollouts.db, rollouts).judge(rollout)
        compiled = _load_point(point)
        comparison = compare(rollouts.db, compiled, rollout).to_dict() if compiled else None
    now = _clock(datetime.now(UTC))
    table = Table(
        "check",
        "limit",
        "value",
        "interval",
        "verdict",
        title=f"Judged now ({now}) on the decisions of step {rollout.step + 1} so far",
        title_justify="left",
    )
    for result in judgement.results:
        check = result.check
        limit = (
            f"max {check.max}"
            if check.max is not None
            else f"min {check.min}"
            if check.min is not None
            else f"+{check.max_increase} over champion"
        )
        table.add_row(
            check.metric.value,
            limit,
            "-" if result.value is None else f"{result.value:.3f}",
            "" if result.low is None else f"[{result.low:.3f}, {result.high:.3f}]",
            result.verdict.value,
        )
    out.print(table)
    if rollout.state is State.PAUSED:
        out.print("paused: waiting for a person (warden rollout resume | promote | abort)")
    else:
        out.print(f"next: {judgement.action}", highlight=False)
    if comparison and comparison["compared"]:
        changes = ", ".join(
            f"{c['from']} -> {c['to']}: {c['count']}"
            for c in comparison["route_changes"]
            if c["from"] != c["to"]
        )
        shift = comparison["confidence_shift"]
        out.print(
            f"challenger vs champion on {comparison['compared']} shared inputs: agreement "
            f"{comparison['agreement']:.1%}, challenger errors "
            f"{comparison['challenger_error_rate']:.1%}, confidence shift "
            f"{'n/a' if shift is None else f'{shift:+.3f}'}, shadow latency p50 "
            f"{comparison['shadow_latency_ms']['p50']:.1f} ms"
            + (f"; routes that would change: {changes}" if changes else ""),
            highlight=False,
        )


def _load_point(point_name: str) -> Any:
    from warden.policy.loader import load_points

    try:
        return load_points(context.settings().config).get(point_name)
    except PolicyError:
        return None


@rollout_app.command("pause")
def pause(point: Annotated[str, typer.Argument()], reason: ReasonOption = "paused") -> None:
    """Hold the rollout at its current share until resumed."""
    with _rollouts() as rollouts:
        _show(rollouts.pause(point, actor=context.actor(), reason=reason))


@rollout_app.command("resume")
def resume(point: Annotated[str, typer.Argument()], reason: ReasonOption = "resumed") -> None:
    """Resume analysis; the current step starts a fresh interval."""
    with _rollouts() as rollouts:
        _show(rollouts.resume(point, actor=context.actor(), reason=reason))


@rollout_app.command("promote")
def promote(
    point: Annotated[str, typer.Argument()], reason: ReasonOption = "promoted by hand"
) -> None:
    """Move one step on now; at the last step the challenger becomes champion."""
    with _rollouts() as rollouts:
        _show(rollouts.promote(point, actor=context.actor(), reason=reason))


@rollout_app.command("abort")
def abort(point: Annotated[str, typer.Argument()], reason: ReasonOption = "aborted") -> None:
    """Stop at once: the challenger gets 0 % of traffic from the next decision on."""
    with _rollouts() as rollouts:
        _show(rollouts.abort(point, actor=context.actor(), reason=reason))
