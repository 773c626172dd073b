"""`warden`: init, policy check, serve, decide, token, kill/resume, demo."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from warden.cli import context
from warden.cli.audit import audit_app
from warden.cli.mcp import mcp_app
from warden.cli.model import model_app
from warden.cli.monitor import monitor_app, report
from warden.cli.policy import (
    policy_approve,
    policy_diff,
    policy_replay,
    policy_submit,
    policy_versions,
)
from warden.cli.review import review_app
from warden.cli.rollout import rollout_app
from warden.cli.users import principal_app, token_app, user_app
from warden.cli.witness import witness_app
from warden.errors import PolicyError, WardenError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Warden: a governed runtime for AI decisions in production.",
)
policy_app = typer.Typer(no_args_is_help=True, help="Check decision point files.")
app.add_typer(policy_app, name="policy")
policy_app.command("diff")(policy_diff)
policy_app.command("replay")(policy_replay)
policy_app.command("versions")(policy_versions)
policy_app.command("submit")(policy_submit)
policy_app.command("approve")(policy_approve)
app.add_typer(token_app, name="token")
app.add_typer(monitor_app, name="monitor")
app.command("report")(report)
app.add_typer(review_app, name="review")
app.add_typer(user_app, name="user")
app.add_typer(principal_app, name="principal")
app.add_typer(audit_app, name="audit")
app.add_typer(model_app, name="model")
app.add_typer(rollout_app, name="rollout")
app.add_typer(mcp_app, name="mcp")
app.add_typer(witness_app, name="witness")

out = Console()
err = Console(stderr=True)


def main() -> None:
    app()


def _fail(error: WardenError | PolicyError, code: int = 1) -> NoReturn:
    if isinstance(error, PolicyError):
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
    else:
        sys.stderr.write(orjson.dumps(error.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Folder of decision point files (default: $WARDEN_CONFIG or ./points).",
    ),
]


@app.command()
def init(
    config: ConfigOption = None,
    origin: Annotated[
        str | None,
        typer.Option(
            help="The ledger's origin, unique to this deployment and named in every signed "
            "checkpoint (default: a random warden.ledger/...). Set once; it never changes.",
        ),
    ] = None,
) -> None:
    """Create the data folder, database and ledger signing key; apply migrations."""
    import os

    from warden.errors import WardenError
    from warden.ledger import identity, lanes

    s = context.settings(config)
    db = context.database(s)
    s.home.mkdir(parents=True, exist_ok=True)
    try:
        chosen = identity.ensure_origin(db, origin)
        key = identity.signing_key(db, s.home)
        count = (
            lanes.configure(db, lanes.configured_lanes()) if lanes.LANES_ENV in os.environ else None
        )
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    out.print(f"Warden database ready: [bold]{s.db_url}[/bold]", highlight=False)
    out.print(f"Ledger origin: {chosen}", highlight=False)
    if count is not None and count > 1:
        out.print(f"Ledger lanes: {count} (lane 0 for control events)", highlight=False)
    out.print(
        f"Ledger signing key: {key.path} (public key id {key.public.key_id})", highlight=False
    )
    if not s.config.exists():
        out.print(
            f"No decision points yet: put YAML files in [bold]{s.config}/[/bold] "
            "(see README, 'Decision point files').",
            highlight=False,
        )


@policy_app.command("check")
def policy_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders (default: $WARDEN_CONFIG or ./points)."),
    ] = None,
    no_models: Annotated[
        bool,
        typer.Option(
            "--no-models", help="Do not load each point's model (e.g. where it is absent)."
        ),
    ] = False,
) -> None:
    """Load decision point files as `serve` does, models included; print `file:line: problem`
    for each one that cannot load and exit 1 on any error."""
    from warden.policy.loader import check_points

    targets = paths or [context.settings().config]
    good, errors = check_points(targets, models=not no_models)
    for error in errors:
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
    for point in good:
        out.print(
            f"[green]ok[/green] {point.source}: point [bold]{point.name}[/bold], "
            f"owner {point.spec.owner}, policy version {point.version[:12]}",
            highlight=False,
        )
    if errors:
        raise typer.Exit(1)
    if not good:
        err.print(f"no decision point files found in {', '.join(map(str, targets))}")
        raise typer.Exit(1)


class HTTPServer(StrEnum):
    UVICORN = "uvicorn"
    GRANIAN = "granian"


APP_FACTORY = "warden.api.app:create_app_from_env"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes. Default: 1 on SQLite (one writer at a time per file), "
            "one per CPU on PostgreSQL.",
        ),
    ] = None,
    server: Annotated[
        HTTPServer,
        typer.Option(
            help="The HTTP server: uvicorn, or granian (pip install 'warden-ai[granian]')."
        ),
    ] = HTTPServer.UVICORN,
    grace: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seconds a stopping server (SIGTERM, Ctrl-C) waits for requests in flight "
            "before it closes their connections.",
        ),
    ] = 10,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs).

    With several workers, one shadow process serves them all and /metrics merges every
    worker's samples."""
    import logging
    import os

    from warden.demo.server import bind

    if server is HTTPServer.GRANIAN:
        try:
            import granian  # noqa: F401
        except ImportError:
            err.print(
                "[red]cannot serve[/red]: --server granian needs granian: "
                "pip install 'warden-ai[granian]'",
                highlight=False,
            )
            raise typer.Exit(1) from None
    from warden.monitor.metrics import prepare_multiprocess
    from warden.policy.loader import load_available
    from warden.rollout.shadow_host import ShadowHost
    from warden.serving import default_workers

    try:
        bind(host, port).close()  # a taken port is said at once, before loading anything
    except WardenError as error:
        err.print(f"[red]cannot serve[/red]: {error.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:    %(message)s")
    s = context.settings(config)
    try:
        loaded = load_available(s.config)  # logs each file that cannot load, with file:line
    except PolicyError as error:
        _fail(error)
    if loaded.broken:
        err.print(
            f"[yellow]{len(loaded.broken)} decision point file(s) did not load[/yellow] (see "
            "above); the others serve. `warden policy check` lists every problem.",
            highlight=False,
        )
    workers = workers or default_workers(s.db_url)
    prepare_multiprocess(workers, s.home)  # /metrics merges every worker's samples
    os.environ["WARDEN_CONFIG"] = str(s.config.resolve())
    context.database(s).dispose()
    shadows = ShadowHost() if workers > 1 and s.shadow_process else None
    if shadows is not None:
        os.environ.update(shadows.address.environ())  # the workers inherit where it listens
    try:
        if server is HTTPServer.GRANIAN:
            _serve_granian(host, port, workers)
            return
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=grace,
        )
    finally:
        if shadows is not None:
            shadows.close()


def _serve_granian(host: str, port: int, workers: int) -> None:
    """The same application under granian (Rust HTTP handling, ASGI with lifespan); each
    worker is a child process that calls the factory."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        APP_FACTORY,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_level=LogLevels.info,
        log_access=False,
    ).serve()


def _load_json(value: str, name: str) -> Any:
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise typer.BadParameter(
                f"cannot read {value[1:]}: {reason}; give a JSON file after @, or the JSON itself",
                param_hint=name,
            ) from None
    else:
        text = value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"{name} is not valid JSON: {exc}") from None


@app.command()
def decide(
    point: Annotated[str, typer.Argument(help="Decision point name.")],
    input: Annotated[str, typer.Option("--input", "-i", help="Input as JSON, or @file.json.")],
    context_json: Annotated[str | None, typer.Option("--context", help="Context JSON.")] = None,
    output: Annotated[str | None, typer.Option(help="Proposal mode: the AI's outcome.")] = None,
    confidence: Annotated[float | None, typer.Option(help="Proposal mode: confidence.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    config: ConfigOption = None,
) -> None:
    """Run one governed decision in-process and print it as JSON."""
    from warden.engine import Proposal

    data = _load_json(input, "--input")
    ctx = _load_json(context_json, "--context") if context_json else None
    try:
        engine = context.open_engine(context.settings(config))
    except PolicyError as error:
        _fail(error)
    try:
        proposal = (
            Proposal(output, confidence) if output is not None or confidence is not None else None
        )
        decision = engine.decide(
            point,
            data,
            context=ctx,
            idempotency_key=idempotency_key,
            actor=context.actor(),
            proposal=proposal,
        )
    except WardenError as error:
        _fail(error)
    finally:
        engine.close()
    _print_json(decision.model_dump(mode="json"))


def _toggle_kill(
    point: str | None, all_points: bool, reason: str, engaged: bool, config: Path | None
) -> None:
    if (point is None) == (not all_points):
        raise typer.BadParameter("name one decision point, or pass --all for every point")
    try:
        engine = context.open_engine(context.settings(config))
    except PolicyError as error:
        _fail(error)
    try:
        switch = engine.set_kill(point or "*", engaged, actor=context.actor(), reason=reason)
    except WardenError as error:
        _fail(error)
    finally:
        engine.close()
    state = "ENGAGED: no decision is auto" if engaged else "released"
    out.print(
        f"kill switch for [bold]{switch.scope}[/bold] {state} (by {switch.actor}: {switch.reason})",
        highlight=False,
    )


PointArg = Annotated[str | None, typer.Argument(help="Decision point, or --all.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every decision point.")]
ReasonOption = Annotated[str, typer.Option(help="Why; recorded in the ledger.")]


@app.command()
def kill(
    point: PointArg = None,
    all_points: AllOption = False,
    *,
    reason: ReasonOption,
    config: ConfigOption = None,
) -> None:
    """Engage the kill switch: from the next decision on, nothing is decided automatically."""
    _toggle_kill(point, all_points, reason, True, config)


@app.command()
def resume(
    point: PointArg = None,
    all_points: AllOption = False,
    *,
    reason: ReasonOption,
    config: ConfigOption = None,
) -> None:
    """Release the kill switch."""
    _toggle_kill(point, all_points, reason, False, config)


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8000,
    rate: Annotated[float, typer.Option(help="Decisions per second of demo traffic.")] = 20.0,
    home: Annotated[Path, typer.Option(help="Folder for the demo's data.")] = Path(".warden/demo"),
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Forget earlier runs (decisions, alerts, kill switches); keep the point file.",
        ),
    ] = False,
) -> None:
    """Train a credit model on generated data, start the server and send it traffic."""
    from warden.demo import DemoError, run_demo

    try:
        run_demo(home, port=port, duration=duration, rate=rate, console=out, fresh=fresh)
    except DemoError:
        raise typer.Exit(1) from None  # run_demo has already said what went wrong
    except PolicyError as error:
        _fail(error)
