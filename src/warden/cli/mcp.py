"""`warden mcp`: run the MCP gateway, check its file, and switch agents or servers off."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from warden.cli import context
from warden.errors import PolicyError, WardenError

mcp_app = typer.Typer(
    no_args_is_help=True,
    help="Govern the tool calls of AI agents: an MCP gateway in front of MCP servers.",
)
out = Console()
err = Console(stderr=True)

GatewayArg = Annotated[Path, typer.Argument(help="The gateway file (upstreams, tools, limits).")]


def _fail(error: WardenError) -> None:
    if isinstance(error, PolicyError):
        err.print(f"[red]{error.location}[/red]: {error.message}", highlight=False, soft_wrap=True)
    else:
        err.print(f"[red]error[/red]: {error.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@mcp_app.command("serve")
def serve(
    gateway: GatewayArg,
    http: Annotated[
        str | None,
        typer.Option(help="Serve Streamable HTTP at HOST:PORT (path /mcp) instead of stdio."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="The agent's name on stdio when WARDEN_TOKEN is unset.")
    ] = None,
) -> None:
    """Run the gateway. On stdio (the default) an MCP client launches this command."""
    from warden.mcp.run import run

    try:
        run(gateway, http=http, agent=agent)
    except WardenError as error:
        _fail(error)


@mcp_app.command("check")
def check(gateway: GatewayArg) -> None:
    """Validate the gateway file against the decision points it names; exit 1 on any error."""
    from warden.engine import Engine
    from warden.mcp.config import load_gateway
    from warden.mcp.run import check_points
    from warden.policy.loader import load_points

    try:
        config = load_gateway(gateway)
        s = context.settings()
        engine = Engine(load_points(config.points_folder() or s.config), context.database(s))
        try:
            check_points(config, engine)
        finally:
            engine.close()
    except WardenError as error:
        _fail(error)
    out.print(
        f"[green]ok[/green] {gateway}: {len(config.upstreams)} upstream(s), "
        f"{len(config.tools)} tool rule(s)",
        highlight=False,
    )


AgentOption = Annotated[str | None, typer.Option("--agent", help="An agent's name.")]
ServerOption = Annotated[str | None, typer.Option("--server", help="An upstream server's name.")]
ReasonOption = Annotated[str, typer.Option(help="Why; recorded in the ledger.")]


def _toggle(agent: str | None, server: str | None, reason: str, engaged: bool) -> None:
    from warden.mcp.kill import set_switch

    if (agent is None) == (server is None):
        err.print("name exactly one of --agent NAME or --server NAME")
        raise typer.Exit(2)
    kind, name = ("agent", agent) if agent is not None else ("server", server)
    assert name is not None
    s = context.settings()
    try:
        engine = context.open_engine(s)
    except WardenError as error:
        _fail(error)
    try:
        switch = set_switch(engine, kind, name, engaged, actor=context.actor(), reason=reason)
    except WardenError as error:
        _fail(error)
    finally:
        engine.close()
    state = "engaged" if engaged else "released"
    sys.stdout.write(f"kill switch {switch.scope} {state}\n")


@mcp_app.command("kill")
def kill(agent: AgentOption = None, server: ServerOption = None, *, reason: ReasonOption) -> None:
    """Stop every tool call of an agent, or to an upstream server, from the next call on."""
    _toggle(agent, server, reason, True)


@mcp_app.command("resume")
def resume(agent: AgentOption = None, server: ServerOption = None, *, reason: ReasonOption) -> None:
    """Release an agent's or a server's kill switch."""
    _toggle(agent, server, reason, False)


@mcp_app.command("demo")
def demo(
    folder: Annotated[Path, typer.Argument(help="Where to write the demo's files.")] = Path(
        "agents-demo"
    ),
) -> None:
    """Write a demo gateway file and decision point for the demo bank MCP server."""
    from importlib.resources import files

    import yaml

    points = folder / "points"
    points.mkdir(parents=True, exist_ok=True)
    template = files("warden.mcp.demo").joinpath("agent_tools.yaml").read_text()
    (points / "agent_tools.yaml").write_text(template)
    gateway = {
        "gateway": "demo",
        "agent": "demo-agent",
        "points": "points",
        "upstreams": {
            "bank": {
                "command": sys.executable,
                "args": ["-m", "warden.mcp.demo.bank"],
                "env": {"BANK_RAN": str((folder / "bank-ran.jsonl").resolve())},
            }
        },
        "tools": [{"server": "bank", "tool": "*", "point": "agent_tools", "hide_refused": True}],
        "wait": {"mode": "pending"},
        "limits": [{"tool": "send_email", "max": 20, "per": "1h", "exceed": "review"}],
    }
    (folder / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    out.print(f"wrote {folder}/gateway.yaml and {points}/agent_tools.yaml", highlight=False)
