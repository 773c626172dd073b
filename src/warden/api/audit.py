"""Audit routes: verification, checkpoints, proofs and the public key. Auditor or admin role."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from warden.api.auth import authenticate_request, require, require_decision
from warden.api.responses import FastJSONResponse
from warden.auth.tokens import Principal, Role
from warden.engine import Engine
from warden.errors import Conflict, InvalidRequest
from warden.ledger import checkpoint as checkpoints
from warden.ledger import identity, keys, note
from warden.ledger.laneproof import lane_consistency_between, parse_since_lanes
from warden.ledger.proof import build_bundle, consistency_between
from warden.ledger.tree import LedgerTree
from warden.ledger.verify import verify_ledger
from warden.settings import Settings

router = APIRouter(prefix="/v1/audit", tags=["audit"])
AUDITORS = (Role.AUDITOR, Role.ADMIN)
MAX_INT64 = 2**63 - 1  # the largest integer both databases compare without overflowing


def _auditor(request: Request, point: str | None = None) -> Principal:
    who = authenticate_request(request)
    require(who, AUDITORS, point)
    return who


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _tree(request: Request) -> LedgerTree:
    """One tree per app: its upper levels and cached tiles make repeated proofs cheap."""
    state = request.app.state
    tree: LedgerTree | None = getattr(state, "ledger_tree", None)
    if tree is None:
        tree = state.ledger_tree = LedgerTree()
    return tree


def _signing_key(request: Request) -> keys.SigningKey:
    """The ledger's key: never created here when the ledger already had one."""
    return identity.signing_key(_engine(request).db, Settings.from_env().home)


@router.get("/verify")
async def verify(request: Request) -> FastJSONResponse:
    """Re-derive the whole ledger; `ok` is true only when everything verifies.

    Signatures are checked against this server's own key; an independent auditor should run
    `warden audit verify --public-key` with the key they hold.
    """
    _auditor(request)
    db = _engine(request).db

    def run() -> dict[str, Any]:
        local = keys.existing_public_key(Settings.from_env().home)
        return verify_ledger(db, [local] if local else []).to_dict()

    return FastJSONResponse(await run_in_threadpool(run))


@router.get("/checkpoints")
async def list_checkpoints(
    request: Request,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_INT64, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FastJSONResponse:
    """Signed checkpoints, newest first, paginated by `next_cursor`."""
    _auditor(request)
    db = _engine(request).db

    def read() -> list[checkpoints.Checkpoint]:
        with db.connect() as conn:
            return checkpoints.page(conn, before=cursor, limit=limit + 1)

    found = await run_in_threadpool(read)
    page = found[:limit]
    next_cursor = page[-1].size if len(found) > limit else None
    return FastJSONResponse({"data": [cp.to_dict() for cp in page], "next_cursor": next_cursor})


@router.get("/proofs/{decision_id}")
async def proof(
    request: Request,
    decision_id: str,
    since: Annotated[
        int | None,
        Query(ge=1, description="also prove the ledger extends the checkpoint of this size"),
    ] = None,
    since_lanes: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="for a decision in a lane above 0: every lane's size at the lanes "
            "checkpoint the auditor remembers, lane 0 first (`1,3,3`); the bundle then carries "
            "each lane's consistency proof from there",
        ),
    ] = None,
) -> FastJSONResponse:
    """A self-contained proof bundle of the decision's events, checkable offline with
    `warden audit check-proof`, against the newest signed checkpoint. A read never signs: when
    no checkpoint covers the decision yet the answer is 409 until the next periodic one (or
    `warden audit checkpoint`)."""
    who = authenticate_request(request)
    engine = _engine(request)
    decision = await run_in_threadpool(engine.get, decision_id)
    require_decision(who, AUDITORS, decision)
    tree = _tree(request)
    sizes = parse_since_lanes(since_lanes) if since_lanes is not None else None
    try:
        bundle = await run_in_threadpool(
            build_bundle, engine.db, decision_id, tree=tree, since=since, since_lanes=sizes
        )
    except InvalidRequest as error:
        if not error.message.startswith("no checkpoint covers"):
            raise
        raise Conflict(error.message, field="decision_id") from None
    return FastJSONResponse(bundle)


@router.get("/consistency")
async def consistency(
    request: Request,
    old: Annotated[int, Query(ge=1, le=MAX_INT64, description="size of the older checkpoint")],
    new: Annotated[int, Query(ge=1, le=MAX_INT64, description="size of the newer checkpoint")],
    lane: Annotated[
        int,
        Query(
            ge=0,
            le=255,
            description="of this lane: `old` and `new` are its sizes at two signed lanes "
            "checkpoints (each side carries its signed lanes checkpoint note)",
        ),
    ] = 0,
) -> FastJSONResponse:
    """The RFC 9162 consistency proof that checkpoint `new` extends checkpoint `old` (of lane
    `lane`, on a ledger with several lanes)."""
    _auditor(request)
    db = _engine(request).db
    if lane:
        return FastJSONResponse(
            await run_in_threadpool(lane_consistency_between, db, lane, old, new)
        )
    result = await run_in_threadpool(consistency_between, db, old, new, _tree(request))
    return FastJSONResponse(result)


@router.get("/public-key")
async def public_key(request: Request) -> FastJSONResponse:
    """The Ed25519 public key that signs this ledger's checkpoints: PEM, and the C2SP verifier
    key (`vkey`) under the ledger's origin."""
    _auditor(request)

    def read() -> tuple[keys.SigningKey, str]:
        return _signing_key(request), identity.ensure_origin(_engine(request).db)

    key, origin = await run_in_threadpool(read)
    vkey = note.Verifier(origin, key.public.raw).vkey()
    return FastJSONResponse(
        {"key_id": key.public.key_id, "pem": key.public.pem(), "origin": origin, "vkey": vkey}
    )
