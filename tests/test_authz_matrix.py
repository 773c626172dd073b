"""The authorisation matrix, generated from the route table.

Every operation of the API is asked by every role (a token scoped to `loan_approval`, plus an
admin of all points), about a point in and out of that scope, and — where it matters — about
the principal's own object and someone else's. What each answer must be is stated once, in
`MATRIX`; a route the app serves without a row there fails the test, so no route ships
without a decision about who may call it.

Answers: `ok` (authorised: any answer but 401/403/404), `403` (authenticated, not allowed),
`404` (outside the caller's scope, told apart from nothing that does not exist).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.reviewing import REVIEW_INPUT, review_points
from warden.api.app import create_app
from warden.auth.tokens import Principal, create_token
from warden.engine import Engine, Proposal
from warden.ids import new_id
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate
from warden.store.schema import monitor_alerts

IN, OUT = "loan_approval", "refund_agent"
ROLES = ("caller", "reviewer", "owner", "auditor", "admin", "admin_all")
READ = frozenset({"caller", "reviewer", "owner", "auditor", "admin", "admin_all"})
VIEW = frozenset({"reviewer", "owner", "auditor", "admin", "admin_all"})
REVIEW = frozenset({"reviewer", "admin", "admin_all"})
OWNER = frozenset({"owner", "admin", "admin_all"})
AUDIT = frozenset({"auditor", "admin", "admin_all"})
CALL = frozenset({"caller", "admin", "admin_all"})
ALL_ADMIN = frozenset({"admin_all"})


@dataclass(frozen=True)
class Row:
    """Who may call a route. `kind`:
    - `point`: about one decision point; allowed roles get `ok` in scope, everyone `404`
      outside it (an all-points admin has no outside);
    - `any`: not about a point; allowed roles get `ok`, others `403`;
    - `public`: no token needed; `console`: signed in by session (tests/test_console*.py);
    - `token`: about a token; its own principal and all-points admins get `ok`, others `404`.
    `own` is the answer when the object is the caller's own (None: same as anyone's)."""

    kind: str
    allowed: frozenset[str] = frozenset()
    own: str | None = None


MATRIX: dict[tuple[str, str], Row] = {
    ("POST", "/v1/decisions"): Row("point", CALL),
    ("POST", "/v1/decisions/batch"): Row("point", CALL),
    ("GET", "/v1/decisions"): Row("point", READ),
    ("GET", "/v1/decisions/{decision_id}"): Row("point", READ),
    ("POST", "/v1/decisions/{decision_id}/outcome"): Row("point", CALL | OWNER),
    ("GET", "/v1/points"): Row("any", READ),
    ("GET", "/v1/points/{point}"): Row("point", READ),
    ("GET", "/v1/kill-switches"): Row("any", READ),
    ("POST", "/v1/points/{point}/kill"): Row("point", OWNER),
    ("POST", "/v1/points/{point}/resume"): Row("point", OWNER),
    ("POST", "/v1/kill"): Row("any", ALL_ADMIN),
    ("POST", "/v1/resume"): Row("any", ALL_ADMIN),
    ("GET", "/healthz"): Row("public"),
    ("GET", "/readyz"): Row("public"),
    ("GET", "/metrics"): Row("public"),
    ("GET", "/docs"): Row("public"),
    ("GET", "/redoc"): Row("public"),
    ("GET", "/v1/reviews"): Row("point", VIEW),
    ("GET", "/v1/reviews/counts"): Row("any", VIEW),
    ("POST", "/v1/reviews/claim"): Row("point", REVIEW),
    ("GET", "/v1/reviews/{decision_id}"): Row("point", VIEW),
    ("POST", "/v1/reviews/{decision_id}/claim"): Row("point", REVIEW, own="403"),
    ("POST", "/v1/reviews/{decision_id}/release"): Row("point", REVIEW),
    ("POST", "/v1/reviews/{decision_id}/approve"): Row("point", REVIEW, own="403"),
    ("POST", "/v1/reviews/{decision_id}/reject"): Row("point", REVIEW, own="403"),
    ("POST", "/v1/reviews/{decision_id}/override"): Row("point", REVIEW, own="403"),
    ("GET", "/v1/points/{point}/health"): Row("point", READ),
    ("GET", "/v1/alerts"): Row("point", READ),
    ("GET", "/v1/tools"): Row("any", READ),  # every reader, each seeing their points' tools
    ("GET", "/v1/alerts/{alert_id}"): Row("point", READ),
    ("POST", "/v1/alerts/{alert_id}/resolve"): Row("point", OWNER),
    ("GET", "/v1/audit/verify"): Row("any", AUDIT),
    ("GET", "/v1/audit/checkpoints"): Row("any", AUDIT),
    ("GET", "/v1/audit/proofs/{decision_id}"): Row("point", AUDIT),
    ("GET", "/v1/audit/consistency"): Row("any", AUDIT),
    ("GET", "/v1/audit/public-key"): Row("any", AUDIT),
    ("GET", "/v1/points/{point}/models"): Row("point", READ),
    ("PUT", "/v1/points/{point}/models/aliases/{alias}"): Row("point", OWNER),
    ("GET", "/v1/points/{point}/rollout"): Row("point", READ),
    ("POST", "/v1/points/{point}/rollout"): Row("point", OWNER),
    ("POST", "/v1/points/{point}/rollout/pause"): Row("point", OWNER),
    ("POST", "/v1/points/{point}/rollout/resume"): Row("point", OWNER),
    ("POST", "/v1/points/{point}/rollout/promote"): Row("point", OWNER),
    ("POST", "/v1/points/{point}/rollout/abort"): Row("point", OWNER),
    ("GET", "/v1/points/{point}/policies"): Row("point", READ),
    ("POST", "/v1/points/{point}/policies/{version}/approve"): Row("point", OWNER),
    ("GET", "/v1/tokens"): Row("any", READ),
    ("POST", "/v1/tokens"): Row("any", ALL_ADMIN),
    ("POST", "/v1/tokens/{token_id}/revoke"): Row("token", ALL_ADMIN, own="ok"),
    ("POST", "/v1/tokens/{token_id}/rotate"): Row("token", ALL_ADMIN, own="ok"),
    ("POST", "/v1/users/{username}/disable"): Row("any", ALL_ADMIN),
    ("POST", "/v1/principals/{name}/disable"): Row("any", ALL_ADMIN),
}
CONSOLE_PREFIX = "/console"


def expected(row: Row, role: str, in_scope: bool, own: bool) -> str:
    if row.kind == "public":
        return "ok"
    if row.kind == "point" and not in_scope and role != "admin_all":
        return "404"
    if own and row.own is not None and (row.kind == "token" or role in row.allowed):
        return row.own
    if row.kind == "token":
        return "ok" if role in row.allowed else "404"
    return "ok" if role in row.allowed else "403"


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every operation the app serves, through included routers."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.update((m, prefix + route.path) for m in route.methods - {"HEAD"})
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "routes") and not hasattr(route, "app"):
                walk(route.routes, prefix)

    walk(app.router.routes, "")
    return found


# -- the world the requests run against --------------------------------------------------


@dataclass
class World:
    engine: Engine
    client: TestClient
    tokens: dict[str, tuple[str, Principal]] = field(default_factory=dict)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role][0]}"}

    def decision(self, point: str, actor: str = "someone") -> str:
        if point == OUT:
            made = self.engine.decide(
                OUT,
                {"order_id": "o", "amount": 900},
                actor=actor,
                proposal=Proposal("refund", 0.95),
            )
        else:
            made = self.engine.decide(IN, REVIEW_INPUT, actor=actor)
        return made.id

    def alert(self, point: str) -> str:
        alert_id = new_id()
        now = datetime.now(UTC)
        with self.engine.db.begin() as conn:
            conn.execute(
                monitor_alerts.insert().values(
                    id=alert_id,
                    point=point,
                    rule="r",
                    state="firing",
                    severity="warning",
                    metric="m",
                    op=">",
                    threshold=1.0,
                    value=2.0,
                    action="notify",
                    started_at=now,
                    fired_at=now,
                    updated_at=now,
                )
            )
        return alert_id


def _input(point: str) -> dict[str, Any]:
    if point == OUT:
        return {"order_id": "o", "amount": 900}
    return REVIEW_INPUT


def request_for(
    world: World, method: str, path: str, role: str, point: str, own: bool
) -> tuple[str, dict[str, Any] | None]:
    """A well-formed request for the route, about `point`, on the caller's own object or not."""
    who = world.tokens[role][1]
    actor = who.actor if own else "someone"
    params: dict[str, str] = {"point": point, "alias": "production", "version": "v1"}
    body: dict[str, Any] | None = {"reason": "matrix"}
    if "{decision_id}" in path:
        params["decision_id"] = world.decision(point, actor)
    if "{alert_id}" in path:
        params["alert_id"] = world.alert(point)
    if "{token_id}" in path:
        owner = who.principal_name if own else f"other-{new_id()[:8]}"
        _, target = create_token(
            world.engine.recorder, name=owner, roles=["caller"], points=[IN], actor="test"
        )
        params["token_id"] = target.token_id
        body = {"grace": "1h"} if path.endswith("/rotate") else {"reason": "matrix"}
    if "{username}" in path:
        params["username"] = "nobody"
    if "{name}" in path:
        params["name"] = f"p-{new_id()[:8]}"
        create_token(
            world.engine.recorder, name=params["name"], roles=["caller"], points=[IN], actor="t"
        )
    url = path.format(**params)
    if path in ("/v1/decisions", "/v1/reviews", "/v1/alerts") and method == "GET":
        url += f"?point={point}"
    if path == "/v1/decisions" and method == "POST":
        body = {"point": point, "input": _input(point)}
        if point == OUT:
            body.update(output="refund", confidence=0.95)
    elif path == "/v1/decisions/batch":
        body = {"point": point, "inputs": [_input(point)]}
    elif path.endswith("/outcome"):
        body = {"outcome": "approve" if point == IN else "refund"}
    elif path == "/v1/reviews/claim":
        world.decision(point)
        body = {"point": point}
    elif path.endswith("/reject"):
        body = {"reason": "no", "reason_code": "policy_breach"}
    elif path.endswith("/override"):
        body = {"outcome": "decline" if point == IN else "deny", "reason": "no"}
    elif path.endswith("/approve") and "/reviews/" in path:
        body = {}
    elif path == "/v1/audit/consistency":
        url += "?old=1&new=1"
    elif path.endswith("/aliases/{alias}"):
        body = {"version": "v1", "reason": "matrix"}
    elif path == "/v1/points/{point}/rollout" and method == "POST":
        body = {"challenger": "v9", "plan": {"steps": [10]}}
    elif path == "/v1/tokens" and method == "POST":
        body = {"name": f"n-{new_id()[:8]}", "roles": ["caller"], "points": [IN]}
    return url, body if method in ("POST", "PUT") else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    db = create_engine(f"sqlite:///{folder / 'warden.db'}")
    migrate(db)
    engine = Engine(load_points(review_points(folder / "points")), db, actor="test")
    app = create_app(engine, workers=[])
    with TestClient(app) as client:
        found = World(engine, client)
        for role in ROLES:
            real = "admin" if role == "admin_all" else role
            found.tokens[role] = create_token(
                engine.recorder,
                name=f"{role}-person",
                roles=[real],
                points=["*"] if role == "admin_all" else [IN],
                groups=["credit-officers"],
                actor="test",
            )
        yield found
    engine.close()
    db.dispose()


def test_every_served_route_has_a_row(world: World) -> None:
    served = {r for r in served_routes(world.client.app) if not r[1].startswith(CONSOLE_PREFIX)}  # type: ignore[arg-type]
    missing = sorted(served - set(MATRIX))
    assert not missing, f"routes without a row in MATRIX (say who may call them): {missing}"
    stale = sorted(set(MATRIX) - served)
    assert not stale, f"rows for routes the app no longer serves: {stale}"


CASES = [
    (method, path, role, in_scope, own)
    for (method, path), row in MATRIX.items()
    for role, in_scope, own in itertools.product(ROLES, (True, False), (False, True))
    if (in_scope or row.kind == "point") and (not own or row.own is not None)
]


HIDDEN = re.compile(r"^no (decision point|decision with id|token) '")


def _answer(status: int, body: str) -> str:
    """`404` only for the scope's answer; a 404 about a missing rollout, checkpoint or
    version of a point the caller may act on means the request was authorised (`ok`)."""
    if status == 404:
        message = json.loads(body)["error"]["message"]
        return "404" if HIDDEN.match(message) else "ok"
    return str(status) if status in (401, 403) else "ok"


@pytest.mark.parametrize(
    ("method", "path"), sorted({(c[0], c[1]) for c in CASES}), ids=lambda v: str(v)
)
def test_each_route_answers_each_role_as_the_matrix_says(
    world: World, method: str, path: str
) -> None:
    row = MATRIX[(method, path)]
    wrong = []
    for role, in_scope, own in itertools.product(ROLES, (True, False), (False, True)):
        if not (in_scope or row.kind == "point") or (own and row.own is None):
            continue
        point = IN if in_scope else OUT
        url, body = request_for(world, method, path, role, point, own)
        headers = {} if row.kind == "public" else world.headers(role)
        response = world.client.request(method, url, json=body, headers=headers)
        got = _answer(response.status_code, response.text)
        want = expected(row, role, in_scope, own)
        if got != want:
            wrong.append(
                (
                    role,
                    point,
                    "own" if own else "other",
                    want,
                    response.status_code,
                    response.text[:160],
                )
            )
        for scope in [s.scope for s in world.engine.kill_switches() if s.engaged]:
            world.engine.set_kill(scope, False, actor="test", reason="matrix reset")
    assert not wrong, "\n".join(map(str, wrong))
