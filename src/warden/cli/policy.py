"""`warden policy diff` and `warden policy replay`: see a policy change before it goes live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from warden.cli import context
from warden.cli.tables import Column, print_json, print_table
from warden.errors import PolicyError
from warden.policy.diff import diff_specs
from warden.policy.loader import load_point
from warden.policy.replay import ReplayResult, replay, same_input_schema
from warden.policy.schema import DecisionPointSpec
from warden.store import queries

out = Console()
err = Console(stderr=True)


def _spec(ref: str) -> tuple[DecisionPointSpec, str]:
    """A policy from a file path, or from a stored version (a prefix of its hash)."""
    path = Path(ref)
    if path.exists():
        try:
            point = load_point(path)
        except PolicyError as error:
            err.print(
                f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        return point.spec, point.version
    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            row = queries.stored_policy(conn, None, ref)
    finally:
        db.dispose()
    if row is None:
        err.print(
            f"'{ref}' is neither a file nor exactly one stored policy version; give a "
            "path or a longer version prefix",
            highlight=False,
        )
        raise typer.Exit(1)
    return DecisionPointSpec.model_validate(row.content), row.version


def policy_diff(
    old: Annotated[str, typer.Argument(help="File, or stored policy version (hash prefix).")],
    new: Annotated[str, typer.Argument(help="File, or stored policy version (hash prefix).")],
) -> None:
    """Show what changed between two versions of a decision point."""
    old_spec, old_version = _spec(old)
    new_spec, new_version = _spec(new)
    changes = diff_specs(old_spec, new_spec)
    out.print(
        f"[bold]{old_spec.point}[/bold] {old_version[:12]} -> {new_version[:12]}", highlight=False
    )
    if not changes:
        out.print("no changes")
        return
    table = Table("section", "key", "change", "old", "new")
    style = {"added": "green", "removed": "red", "changed": "yellow"}
    for change in changes:
        table.add_row(
            change.section,
            change.key,
            f"[{style[change.kind]}]{change.kind}[/]",
            "" if change.old is None else str(change.old),
            "" if change.new is None else str(change.new),
        )
    out.print(table)


def policy_replay(
    new: Annotated[Path, typer.Argument(help="The new decision point file.")],
    last: Annotated[int, typer.Option(help="How many recent decisions to replay.")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Re-route the last N recorded decisions under a new policy and show what would change."""
    if last < 1:
        raise typer.BadParameter("--last must be at least 1")
    try:
        point = load_point(new)
    except PolicyError as error:
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            recorded = queries.replay_rows(conn, point.name, last)
            validated_under = same_input_schema(point, queries.input_schemas(conn, point.name))
    finally:
        db.dispose()
    if not recorded:
        err.print(f"no recorded decisions of '{point.name}' to replay", highlight=False)
        raise typer.Exit(1)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying", total=len(recorded))
        result = replay(
            point,
            recorded,
            progress=lambda n: progress.advance(task, n),
            validated_under=validated_under,
        )
    if as_json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    _print_replay(result)


def _print_replay(result: ReplayResult) -> None:
    versions = ", ".join(v[:12] for v in result.old_versions)
    out.print(
        f"Replayed [bold]{result.total:,}[/bold] decisions of [bold]{result.point}"
        f"[/bold] (recorded under {versions}) with policy {result.new_version[:12]}: "
        f"[bold]{result.changed:,}[/bold] would take another route.",
        highlight=False,
    )
    routes = Table("route", "before", "after", "change")
    for name in ("auto", "review", "fallback", "refused"):
        before, after = result.before[name], result.after[name]
        share = (after - before) / result.total * 100
        routes.add_row(
            name,
            f"{before:,}",
            f"{after:,}",
            f"{after - before:+,} ({share:+.1f} pts)" if after != before else "",
        )
    out.print(routes)
    moves = Table("from", "to", "count", "because of (new policy)", "examples")
    for (a, b), transition in sorted(result.transitions.items(), key=lambda kv: -kv[1].count):
        if a != b:
            why = ", ".join(f"{code} ({n:,})" for code, n in transition.reasons.most_common(3))
            moves.add_row(a, b, f"{transition.count:,}", why, "\n".join(transition.examples))
    if moves.row_count:
        out.print(moves)


def policy_versions(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every stored version of a point: live, pending approval or superseded, and by whom."""
    from warden.policy.versions import PolicyVersions
    from warden.store.recorder import Recorder

    db = context.database(context.settings())
    recorder = Recorder(db)
    try:
        versions = PolicyVersions(db, recorder).list(point)
    finally:
        recorder.close()
        db.dispose()
    if not versions:
        err.print(f"no stored versions of '{point}'", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print_json(
            [
                {
                    "version": v.version,
                    "status": v.status,
                    "author": v.author,
                    "loaded_at": v.loaded_at.isoformat(),
                    "approved_by": v.approved_by,
                    "source": v.source,
                }
                for v in versions
            ]
        )
        return
    columns = [
        Column("version"),
        Column("status"),
        Column("author", drop=2),
        Column("loaded", drop=3),
        Column("approved by", drop=1),
        Column("source", drop=4, wrap=True),
    ]
    rows = [
        [
            v.version[:12],
            v.status,
            v.author,
            v.loaded_at.isoformat(timespec="seconds"),
            v.approved_by or "",
            v.source,
        ]
        for v in versions
    ]
    print_table(columns, rows)  # sized for the terminal it runs in


def policy_submit(
    path: Annotated[Path, typer.Argument(help="The changed decision point file.")],
) -> None:
    """Record a changed file as a new version under your name (pending where approval is due)."""
    from warden.policy.versions import PolicyVersions
    from warden.store.recorder import Recorder

    try:
        point = load_point(path)
    except PolicyError as error:
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    db = context.database(context.settings())
    recorder = Recorder(db)
    try:
        version = PolicyVersions(db, recorder).submit(point, context.actor())
    finally:
        recorder.close()
        db.dispose()
    out.print(
        f"{point.name} version {version.version[:12]}: [bold]{version.status}[/bold] "
        f"(author {version.author})",
        highlight=False,
    )


def policy_approve(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    version: Annotated[str, typer.Argument(help="Pending version (a prefix is enough).")],
) -> None:
    """Approve a pending policy version (not your own); it decides from the next decision on."""
    from warden.errors import WardenError
    from warden.policy.versions import PolicyVersions
    from warden.store.recorder import Recorder

    db = context.database(context.settings())
    recorder = Recorder(db)
    try:
        approved = PolicyVersions(db, recorder).approve(point, version, actor=context.actor())
    except WardenError as error:
        err.print(f"[red]{error.type}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        recorder.close()
        db.dispose()
    out.print(
        f"{point} version {approved.version[:12]} is [bold]live[/bold] (author "
        f"{approved.author}, approved by {approved.approved_by})",
        highlight=False,
    )
