"""Starting the gateway: the engine, the upstreams, the SLA expiry worker, then a transport."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from warden.engine import Engine
from warden.errors import PolicyError
from warden.mcp import trace
from warden.mcp.config import GatewayConfig, load_gateway
from warden.mcp.gateway import Gateway, Identity, identity_from_token
from warden.mcp.governor import EXECUTE, HOLD_RULE, RESULT_LINGER, Governor
from warden.mcp.stdio import stdio_streams
from warden.mcp.upstream import Upstreams
from warden.monitor.metrics import exposition
from warden.policy.loader import load_points
from warden.policy.schema import ModelKind
from warden.review.desk import ReviewDesk
from warden.review.expiry import ExpiryWorker
from warden.settings import Settings
from warden.store.database import create_engine, migrate

KEY_FILE = "mcp-digest.key"


def digest_key(home: Path) -> bytes:
    """The key of argument digests: WARDEN_MCP_KEY (hex), else a random key kept in WARDEN_HOME.

    Gateways that must agree on digests (replicas) share it through the environment."""
    configured = os.environ.get("WARDEN_MCP_KEY")
    if configured:
        return bytes.fromhex(configured)
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def check_points(config: GatewayConfig, engine: Engine) -> None:
    """Every governing point exists, takes proposals, can say `execute`, and never executes on
    expiry — so a held call nobody approved is denied."""
    file = config.source or "gateway"
    for index, rule in enumerate(config.tools):
        compiled = engine.points.get(rule.point)
        where = f"tools.{index}.point"
        if compiled is None:
            known = ", ".join(sorted(engine.points)) or "(none loaded)"
            raise PolicyError(
                f"{where}: no decision point '{rule.point}'; loaded: {known}", file=file
            )
        spec = compiled.spec
        if spec.model.kind is not ModelKind.PROPOSAL:
            raise PolicyError(
                f"{where}: point '{rule.point}' must use `model: {{kind: proposal}}`: the agent "
                "proposes the call",
                file=file,
            )
        if EXECUTE not in spec.outcomes:
            raise PolicyError(
                f"{where}: point '{rule.point}' needs the outcome '{EXECUTE}' among its outcomes",
                file=file,
            )
        if spec.review.on_expiry == EXECUTE:
            raise PolicyError(
                f"{where}: point '{rule.point}' executes on SLA expiry; a call nobody approved "
                "must be denied, so set review.on_expiry to another outcome (e.g. deny)",
                file=file,
            )
        holds = (
            any(limit.exceed == "review" for limit in config.limits)
            or (config.loop is not None and config.loop.exceed == "review")
            or config.kill.action == "review"
        )
        if holds and not any(HOLD_RULE in r.when for r in spec.rules.review):
            raise PolicyError(
                f"{where}: point '{rule.point}' needs a review rule `when: \"{HOLD_RULE}\"` so "
                "calls the gateway holds (limits, loops, kill switches) go to a person",
                file=file,
            )


@asynccontextmanager
async def open_gateway(
    gateway_file: Path, settings: Settings | None = None, *, agent: str | None = None
) -> AsyncIterator[Gateway]:
    config = load_gateway(gateway_file)
    settings = settings or Settings.from_env()
    folder = config.points_folder() or settings.config
    db = create_engine(settings.db_url)
    migrate(db)
    engine = Engine(load_points(folder), db, actor="mcp-gateway", model_cache=settings.model_cache)
    expiry: ExpiryWorker | None = None
    try:
        check_points(config, engine)
        default = identity_from_token(db, os.environ.get("WARDEN_TOKEN"))
        if default is None:
            name = agent or config.agent
            default = Identity(name, f"agent:{name}")
        governor = Governor(engine, config, digest_key(settings.home), result_linger=RESULT_LINGER)
        trace.watch_recorder(engine.recorder)
        expiry = ExpiryWorker(ReviewDesk(engine).expire_due)
        expiry.start()
        async with Upstreams(config) as upstreams:
            try:
                yield Gateway(governor, upstreams, default=default)
            finally:
                await governor.flush()  # results still waiting to ride with a decision
                governor.close()
    finally:
        if expiry is not None:
            expiry.stop()
        engine.close()
        db.dispose()


async def serve_stdio(gateway: Gateway) -> None:
    server = gateway.server
    async with stdio_streams() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(gateway: Gateway, host: str, port: int, *, anonymous: bool = False) -> None:
    """Streamable HTTP at http://HOST:PORT/mcp; each request names its agent by bearer token
    (`anonymous`: requests without one act as the configured agent). Prometheus metrics of the
    tool calls (and of the decisions behind them) at /metrics."""
    if not anonymous:
        gateway.default = None

    async def metrics(request: Request) -> Response:
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    app = gateway.server.streamable_http_app(
        host=host, custom_starlette_routes=[Route("/metrics", metrics)]
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()


def run(gateway_file: Path, *, http: str | None = None, agent: str | None = None) -> None:
    async def main() -> None:
        async with open_gateway(gateway_file, agent=agent) as gateway:
            if http is None:
                await serve_stdio(gateway)
            else:
                host, _, port = http.rpartition(":")
                await serve_http(
                    gateway, host or "127.0.0.1", int(port), anonymous=agent is not None
                )

    anyio.run(main)
