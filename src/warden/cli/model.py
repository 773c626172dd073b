"""`warden model`: register versions, move aliases, and see which version was live when."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from warden.cli import context
from warden.cli.tables import Column, print_json, print_table
from warden.errors import PolicyError, WardenError
from warden.rollout.registry import Registry
from warden.store.recorder import Recorder

model_app = typer.Typer(no_args_is_help=True, help="Model versions and aliases.")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
out = Console()
err = Console(stderr=True)


def _registry() -> tuple[Registry, Any]:
    settings = context.settings()
    db = context.database(settings)
    recorder = Recorder(db)
    registry = Registry(db, recorder, settings.model_cache)

    def close() -> None:
        recorder.close()
        db.dispose()

    return registry, close


def _point(name: str) -> Any:
    from warden.policy.loader import load_points

    try:
        points = load_points(context.settings().config)
    except PolicyError as error:
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if name not in points:
        err.print(f"no decision point '{name}'; known: {', '.join(sorted(points)) or 'none'}")
        raise typer.Exit(1)
    return points[name]


def _json(value: str | None, name: str) -> Any:
    if value is None:
        return None
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"{name} is not valid JSON: {exc}") from None


def _fail(error: WardenError) -> None:
    err.print(f"[red]{error.type}[/red]: {error.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@model_app.command("register")
def register(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    version: Annotated[str, typer.Option(help="New, immutable version name.")],
    path: Annotated[Path, typer.Option(help="The artifact (joblib or onnx file).")],
    metadata: Annotated[
        str | None, typer.Option(help="JSON: training data reference, metrics...")
    ] = None,
    smoke_input: Annotated[
        str | None,
        typer.Option(help="JSON input the model must answer (default: the latest recorded input)."),
    ] = None,
) -> None:
    """Register an artifact as a new version; it must load and answer a smoke input first."""
    compiled = _point(point)
    registry, close = _registry()
    try:
        registered = registry.register(
            compiled,
            version=version,
            artifact=path,
            actor=context.actor(),
            metadata=_json(metadata, "--metadata"),
            smoke_input=_json(smoke_input, "--smoke-input"),
        )
    except WardenError as error:
        _fail(error)
        return
    finally:
        close()
    out.print(
        f"registered [bold]{point}[/bold] version [bold]{registered.version}[/bold] "
        f"(sha256 {registered.sha256[:12]})",
        highlight=False,
    )


@model_app.command("list")
def list_versions(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    as_json: JsonOption = False,
) -> None:
    """Registered versions and the aliases that point at them."""
    registry, close = _registry()
    try:
        versions = registry.versions(point)
        aliases = registry.aliases(point)
    finally:
        close()
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    if as_json:
        print_json(
            [
                {
                    "version": v.version,
                    "aliases": sorted(by_version.get(v.version, [])),
                    "sha256": v.sha256,
                    "registered_at": v.registered_at.isoformat(),
                    "registered_by": v.registered_by,
                    "metadata": v.metadata,
                }
                for v in versions
            ]
        )
        return
    columns = [
        Column("version"),
        Column("aliases"),
        Column("sha256", drop=4),
        Column("registered", drop=2),
        Column("by", drop=3),
        Column("metadata", drop=5, wrap=True),
    ]
    rows = [
        [
            v.version,
            ", ".join(sorted(by_version.get(v.version, []))),
            v.sha256[:12],
            v.registered_at.isoformat(timespec="seconds"),
            v.registered_by,
            orjson.dumps(v.metadata).decode(),
        ]
        for v in versions
    ]
    print_table(columns, rows)  # sized for the terminal it runs in


@model_app.command("alias")
def alias(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    name: Annotated[str, typer.Argument(help="champion or challenger.")],
    version: Annotated[str | None, typer.Argument(help="Version; omit with --clear.")] = None,
    clear: Annotated[bool, typer.Option(help="Remove the alias.")] = False,
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "",
) -> None:
    """Point an alias at a version. Every move is a ledger event."""
    if (version is None) != clear:
        raise typer.BadParameter("give a version, or --clear to remove the alias")
    registry, close = _registry()
    try:
        move = registry.set_alias(point, name, version, actor=context.actor(), reason=reason)
    except WardenError as error:
        _fail(error)
        return
    finally:
        close()
    out.print(
        f"{point} {move.alias}: {move.previous or '-'} -> {move.version or '-'}", highlight=False
    )


@model_app.command("history")
def history(
    point: Annotated[str, typer.Argument(help="Decision point.")],
    as_json: JsonOption = False,
) -> None:
    """Every alias move, oldest first: which version was live when, who moved it and why."""
    registry, close = _registry()
    try:
        moves = registry.history(point)
    finally:
        close()
    if as_json:
        print_json(
            [
                {
                    "at": move.at.isoformat(),
                    "alias": move.alias,
                    "from": move.previous,
                    "to": move.version,
                    "by": move.actor,
                    "reason": move.reason,
                    "event": move.seq,
                }
                for move in moves
            ]
        )
        return
    columns = [
        Column("when"),
        Column("alias", drop=3),
        Column("from", drop=4),
        Column("to"),
        Column("by", drop=2),
        Column("reason", drop=1, wrap=True),
        Column("event", drop=5),
    ]
    rows = [
        [
            move.at.isoformat(timespec="seconds"),
            move.alias,
            move.previous or "-",
            move.version or "-",
            move.actor,
            move.reason,
            str(move.seq),
        ]
        for move in moves
    ]
    print_table(columns, rows)  # sized for the terminal it runs in
