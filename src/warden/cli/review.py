"""`warden review`: the queue and the verdicts from a terminal, against the local database.

The CLI acts as the operator running it (`cli:<user>`, authenticated by access to the
database, with admin rights). A verdict on a free task claims it first, so one command does
what the console does in two clicks; both steps are in the ledger.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from warden.auth.tokens import Principal, Role
from warden.cli import context
from warden.cli.tables import Column, print_table, resolve_prefix
from warden.errors import PolicyError, WardenError
from warden.review.desk import ReviewDesk
from warden.review.tasks import ReviewTask, TaskFilter, TaskStatus

review_app = typer.Typer(no_args_is_help=True, help="Review decisions waiting for a person.")
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Folder of decision point files (default: $WARDEN_CONFIG)."
    ),
]
IdArg = Annotated[str, typer.Argument(help="The decision id, or a unique start of it.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclass(frozen=True)
class Operator(Principal):
    """Whoever runs the CLI, the principal `warden decide` records, so they cannot approve
    their own decisions (from any credential); admin rights, since they can open the
    database anyway."""

    @property
    def credential(self) -> str:
        return f"cli:{self.name}"


def operator() -> Principal:
    from warden.auth.principals import principal_id_for

    name = context.principal_name()
    return Operator(
        token_id="",
        name=context.os_user(),
        roles=frozenset({Role.ADMIN}),
        points=frozenset({"*"}),
        method="cli",
        principal_id=principal_id_for(name),
        principal_name=name,
    )


def _fail(error: WardenError | PolicyError) -> NoReturn:
    if isinstance(error, PolicyError):
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False)
    else:
        sys.stderr.write(orjson.dumps(error.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    raise typer.Exit(1)


@contextmanager
def _desk(config: Path | None) -> Iterator[ReviewDesk]:
    try:
        engine = context.open_engine(context.settings(config))
    except PolicyError as error:
        _fail(error)
    try:
        yield ReviewDesk(engine)
    except WardenError as error:
        _fail(error)
    finally:
        engine.close()
        engine.db.dispose()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _remaining(task: ReviewTask, now: datetime) -> str:
    from warden.console.render import remaining

    return remaining(task.due_at, now) if task.status is TaskStatus.OPEN else task.status.value


def _task_id(desk: ReviewDesk, given: str) -> str:
    """The full decision id of the one review task whose id starts with `given`."""
    from warden.store.schema import review_tasks

    with desk.engine.db.connect() as conn:
        return resolve_prefix(conn, review_tasks.c.decision_id, given)


@review_app.command("list")
def review_list(
    point: Annotated[str | None, typer.Option(help="Only this decision point.")] = None,
    status: Annotated[str, typer.Option(help="open, decided, expired or all.")] = "open",
    limit: Annotated[int, typer.Option(help="At most this many tasks.")] = 50,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Review tasks, oldest first."""
    if status not in ("open", "decided", "expired", "all"):
        raise typer.BadParameter("--status is one of open, decided, expired, all")
    flt = TaskFilter(point=point, status=None if status == "all" else TaskStatus(status))
    with _desk(config) as desk:
        tasks, _ = desk.tasks(operator(), flt, limit=limit)
    if as_json:
        _print_json([t.model_dump(mode="json") for t in tasks])
        return
    now = datetime.now(UTC)
    columns = [
        Column("decision"),  # never left out: every other review command needs it
        Column("point", drop=4),
        Column("proposed"),
        Column("confidence", drop=2, justify="right"),
        Column("why", drop=3, wrap=True),
        Column("SLA"),
        Column("votes", drop=6),
        Column("claimed", drop=5),
    ]
    rows = []
    for t in tasks:
        d = t.decision
        rows.append(
            [
                t.decision_id,
                t.point,
                (d.proposed_outcome if d else None) or "-",
                f"{d.confidence:.2f}" if d and d.confidence is not None else "-",
                ", ".join(r.code for r in d.reasons) if d else "",
                _remaining(t, now),
                f"{len(t.level_votes())}/{t.required}",
                t.holder(now) or "-",
            ]
        )
    screen = Console()  # sized now, for the terminal this command runs in
    print_table(columns, rows, title=f"Review tasks ({status})", console=screen)
    if not tasks:
        screen.print("Nothing is waiting for review.")


@review_app.command("show")
def review_show(decision_id: IdArg, config: ConfigOption = None) -> None:
    """One task as JSON: decision, votes, claim, deadline and its ledger history."""
    with _desk(config) as desk:
        decision_id = _task_id(desk, decision_id)
        task = desk.task(decision_id)
        history = desk.history(decision_id)
    body = task.model_dump(mode="json")
    body["history"] = [{**e, "ts": e["ts"].isoformat()} for e in history]
    _print_json(body)


def _act(
    config: Path | None,
    decision_id: str,
    action: Callable[[ReviewDesk, Principal, str], ReviewTask],
) -> None:
    who = operator()
    with _desk(config) as desk:
        decision_id = _task_id(desk, decision_id)
        task = desk.task(decision_id)
        if task.holder(desk.clock()) != who.actor:
            desk.claim(who, decision_id)
        result = action(desk, who, decision_id)
    _print_json(result.model_dump(mode="json", exclude={"decision"}))


@review_app.command("claim")
def review_claim(decision_id: IdArg, config: ConfigOption = None) -> None:
    """Hold a task for its lease (claiming again renews it)."""
    with _desk(config) as desk:
        task = desk.claim(operator(), _task_id(desk, decision_id))
    _print_json(task.model_dump(mode="json", exclude={"decision"}))


@review_app.command("release")
def review_release(decision_id: IdArg, config: ConfigOption = None) -> None:
    """Give a claimed task back to the queue."""
    with _desk(config) as desk:
        task = desk.release(operator(), _task_id(desk, decision_id))
    _print_json(task.model_dump(mode="json", exclude={"decision"}))


ReasonOption = Annotated[str, typer.Option(help="Why; recorded in the ledger.")]


@review_app.command("approve")
def review_approve(
    decision_id: IdArg,
    reason: Annotated[str | None, typer.Option(help="Optional note.")] = None,
    config: ConfigOption = None,
) -> None:
    """Let the proposed outcome stand."""
    _act(config, decision_id, lambda desk, who, full: desk.approve(who, full, reason=reason))


@review_app.command("reject")
def review_reject(
    decision_id: IdArg,
    reason: ReasonOption,
    code: Annotated[str, typer.Option(help="Reason code, e.g. missing_documents.")],
    config: ConfigOption = None,
) -> None:
    """Apply no outcome; a reason and a reason code are required."""
    _act(
        config,
        decision_id,
        lambda desk, who, full: desk.reject(who, full, reason=reason, reason_code=code),
    )


@review_app.command("override")
def review_override(
    decision_id: IdArg,
    outcome: Annotated[str, typer.Option(help="Another outcome of the point.")],
    reason: ReasonOption,
    config: ConfigOption = None,
) -> None:
    """Apply another allowed outcome instead of the proposal."""
    _act(
        config,
        decision_id,
        lambda desk, who, full: desk.override(who, full, outcome=outcome, reason=reason),
    )
