"""The review API through a real client: every action, every refusal, four-eyes and the clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.ledger_helpers import assert_state_agrees
from tests.reviewing import (
    AUTO_INPUT,
    FOUR_EYES_INPUT,
    LOAN_WITH_REVIEW,
    REVIEW_INPUT,
    Clock,
    review_points,
    reviewer,
    token,
)
from warden.api.app import create_app
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.store.schema import events, review_tasks

Headers = dict[str, str]


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "rp")), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def desk(engine: Engine, clock: Clock) -> ReviewDesk:
    return ReviewDesk(engine, clock=clock)


@pytest.fixture
def client(engine: Engine, desk: ReviewDesk) -> Iterator[TestClient]:
    with TestClient(create_app(engine, desk=desk, workers=[])) as test_client:
        yield test_client


@pytest.fixture
def caller(engine: Engine) -> Headers:
    return token(engine, ["caller"], name="caller")[0]


@pytest.fixture
def alice(engine: Engine) -> Headers:
    return reviewer(engine, "alice")[0]


@pytest.fixture
def bob(engine: Engine) -> Headers:
    return reviewer(engine, "bob")[0]


def decide(client: TestClient, headers: Headers, data: dict[str, Any] = REVIEW_INPUT) -> str:
    response = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": data}, headers=headers
    )
    assert response.status_code in (200, 202), response.text
    decision_id: str = response.json()["id"]
    return decision_id


def snapshot(engine: Engine, decision_id: str) -> tuple[Any, ...]:
    """The task row and the ledger length: a refused request must change neither."""
    with engine.db.connect() as conn:
        row = conn.execute(
            sa.select(review_tasks).where(review_tasks.c.decision_id == decision_id)
        ).first()
        count = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
    return (tuple(row) if row else None, count)


def assert_refused(
    response: Any, status: int, type_: str, field: str | None = None, *, contains: str = ""
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_ and error["message"]
    if field is not None:
        assert error["field"] == field
    assert contains in error["message"]


def test_review_decision_gets_a_task_in_its_transaction(
    client: TestClient, caller: Headers, alice: Headers, engine: Engine
) -> None:
    pending = decide(client, caller)
    auto = decide(client, caller, AUTO_INPUT)
    task = client.get(f"/v1/reviews/{pending}", headers=alice).json()
    assert task["status"] == "open" and task["groups"] == ["credit-officers"]
    assert task["required"] == 1 and not task["four_eyes"]
    decision = task["decision"]
    assert decision["proposed_outcome"] == "approve" and decision["confidence"] > 0.9
    assert [r["code"] for r in decision["reasons"]] == ["large_amount"]
    assert decision["reasons"][0]["when"] == "input.amount > 50000"
    assert [e["type"] for e in task["history"]] == ["decision.created"]
    assert task["due_at"] > task["created_at"]
    missing = client.get(f"/v1/reviews/{auto}", headers=alice)
    assert_refused(missing, 404, "not_found", "id", contains="route auto")
    with engine.db.connect() as conn:  # the task's row and the decision's event share one seq
        created = conn.execute(
            sa.select(events.c.seq).where(events.c.decision_id == pending)
        ).scalar_one()
    assert created > 0


def test_four_eyes_rule_requires_two_reviewers(
    client: TestClient, caller: Headers, alice: Headers
) -> None:
    task = client.get(f"/v1/reviews/{decide(client, caller, FOUR_EYES_INPUT)}", headers=alice)
    assert task.json()["four_eyes"] and task.json()["required"] == 2


def test_claim_then_approve_makes_the_decision_final(
    client: TestClient, caller: Headers, alice: Headers, clock: Clock
) -> None:
    decision_id = decide(client, caller)
    claimed = client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    assert claimed.status_code == 200 and claimed.json()["claimed_by"].endswith(":alice")
    clock.advance(42)
    approved = client.post(
        f"/v1/reviews/{decision_id}/approve", json={"reason": "documents checked"}, headers=alice
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "decided" and approved.json()["outcome"] == "approve"
    final = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert final["status"] == "final" and final["outcome"] == "approve"
    assert final["reasons"][-1] == {
        "code": "reviewer_approved",
        "kind": "approve",
        "message": "documents checked",
        "when": None,
        "field": None,
    }
    history = client.get(f"/v1/reviews/{decision_id}", headers=alice).json()["history"]
    assert [e["type"] for e in history] == [
        "decision.created",
        "review.claimed",
        "review.approved",
    ]
    vote = history[-1]["payload"]
    assert vote["reviewer"].endswith(":alice") and vote["auth"] == "api-token"
    assert vote["seconds"] == 42.0 and vote["final"] is True
    assert vote["opened_at"] < vote["submitted_at"]


def test_reject_applies_no_outcome_and_keeps_the_reason_code(
    client: TestClient, caller: Headers, alice: Headers
) -> None:
    decision_id = decide(client, caller)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    rejected = client.post(
        f"/v1/reviews/{decision_id}/reject",
        json={"reason": "income not verified", "reason_code": "unverified_income"},
        headers=alice,
    )
    assert rejected.status_code == 200, rejected.text
    final = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert final["status"] == "final" and final["outcome"] is None
    assert final["reasons"][-1]["code"] == "unverified_income"
    assert final["reasons"][-1]["kind"] == "reject"


def test_override_applies_another_outcome(
    client: TestClient, caller: Headers, alice: Headers
) -> None:
    decision_id = decide(client, caller)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    response = client.post(
        f"/v1/reviews/{decision_id}/override",
        json={"outcome": "decline", "reason": "debt too high"},
        headers=alice,
    )
    assert response.status_code == 200, response.text
    final = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert final["outcome"] == "decline" and final["proposed_outcome"] == "approve"


def test_release_frees_the_task(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers
) -> None:
    decision_id = decide(client, caller)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    released = client.post(f"/v1/reviews/{decision_id}/release", headers=alice)
    assert released.status_code == 200 and released.json()["claimed_by"] is None
    assert client.post(f"/v1/reviews/{decision_id}/claim", headers=bob).status_code == 200


BAD_REQUESTS: list[tuple[str, str, dict[str, Any] | None, int, str, str | None]] = [
    # (who, action, body, status, type, field)
    ("alice", "approve", {}, 409, "conflict", "id"),  # approve without claim
    ("bob", "claim", None, 409, "conflict", "id"),  # claim of a task alice holds
    ("bob", "approve", {}, 409, "conflict", "id"),  # approve a task someone else holds
    ("alice!", "override", {"outcome": "maybe", "reason": "x"}, 400, "invalid_request", "outcome"),
    (
        "alice!",
        "override",
        {"outcome": "approve", "reason": "x"},
        400,
        "invalid_request",
        "outcome",
    ),
    ("alice!", "override", {"outcome": "decline"}, 400, "invalid_request", "reason"),
    (
        "alice!",
        "override",
        {"outcome": "decline", "reason": "  "},
        400,
        "invalid_request",
        "reason",
    ),
    ("alice!", "reject", {"reason_code": "bad_docs"}, 400, "invalid_request", "reason"),
    ("alice!", "reject", {"reason": "why"}, 400, "invalid_request", "reason_code"),
    (
        "alice!",
        "reject",
        {"reason": "why", "reason_code": "Bad Code"},
        400,
        "invalid_request",
        "reason_code",
    ),
    ("alice!", "approve", {"unknown": 1}, 400, "invalid_request", "unknown"),
    ("alice!", "approve", {"outcome": "decline"}, 400, "invalid_request", "outcome"),
    ("other_point", "claim", None, 404, "not_found", "id"),
    ("no_group", "claim", None, 403, "forbidden", "Authorization"),
    ("submitter", "claim", None, 403, "forbidden", "Authorization"),
    ("submitter", "approve", {}, 403, "forbidden", "Authorization"),
    ("caller", "claim", None, 403, "forbidden", "Authorization"),
    ("owner", "approve", {}, 403, "forbidden", "Authorization"),
    ("anonymous", "claim", None, 401, "unauthenticated", "Authorization"),
]


@pytest.mark.parametrize(("who", "action", "body", "status", "type_", "field"), BAD_REQUESTS)
def test_bad_requests_are_refused_and_change_nothing(
    client: TestClient,
    engine: Engine,
    caller: Headers,
    alice: Headers,
    bob: Headers,
    who: str,
    action: str,
    body: dict[str, Any] | None,
    status: int,
    type_: str,
    field: str | None,
) -> None:
    both, _ = token(engine, ["caller", "reviewer"], groups=["credit-officers"], name="both")
    decision_id = decide(client, both if who == "submitter" else caller)
    if who != "alice":  # everyone but plain "alice" meets a task alice holds
        assert client.post(f"/v1/reviews/{decision_id}/claim", headers=alice).status_code == 200
    headers = {
        "alice": alice,
        "alice!": alice,
        "bob": bob,
        "submitter": both,
        "caller": caller,
        "anonymous": {},
        "other_point": token(
            engine, ["reviewer"], points=["refund_agent"], groups=["credit-officers"]
        )[0],
        "no_group": token(engine, ["reviewer"], groups=["support"])[0],
        "owner": token(engine, ["owner"])[0],
    }[who]
    before = snapshot(engine, decision_id)
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    response = client.post(f"/v1/reviews/{decision_id}/{action}", **kwargs)
    assert_refused(response, status, type_, field)
    assert snapshot(engine, decision_id) == before
    assert client.get(f"/v1/decisions/{decision_id}", headers=caller).json()["status"] == "pending"


def test_unknown_task_and_closed_task(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers, engine: Engine
) -> None:
    assert_refused(client.post("/v1/reviews/nope/claim", headers=alice), 404, "not_found", "id")
    decision_id = decide(client, caller)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    client.post(f"/v1/reviews/{decision_id}/approve", headers=alice)
    before = snapshot(engine, decision_id)
    again = client.post(f"/v1/reviews/{decision_id}/claim", headers=bob)
    assert_refused(again, 409, "conflict", "id", contains="closed")
    assert snapshot(engine, decision_id) == before


def test_four_eyes_two_agreeing_reviewers(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers, engine: Engine
) -> None:
    decision_id = decide(client, caller, FOUR_EYES_INPUT)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    first = client.post(f"/v1/reviews/{decision_id}/approve", headers=alice).json()
    assert first["status"] == "open" and len(first["votes"]) == 1 and first["claimed_by"] is None
    assert client.get(f"/v1/decisions/{decision_id}", headers=caller).json()["status"] == "pending"
    again = client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)  # same person twice
    assert_refused(again, 403, "forbidden", contains="already voted")
    client.post(f"/v1/reviews/{decision_id}/claim", headers=bob)
    second = client.post(f"/v1/reviews/{decision_id}/approve", headers=bob).json()
    assert second["status"] == "decided" and second["outcome"] == "approve"
    final = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert final["status"] == "final" and "2 reviewers" in final["reasons"][-1]["message"]


def test_four_eyes_disagreement_escalates_to_two_fresh_reviewers(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers, engine: Engine
) -> None:
    carol, _ = reviewer(engine, "carol")
    dave, _ = reviewer(engine, "dave")
    decision_id = decide(client, caller, FOUR_EYES_INPUT)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    client.post(f"/v1/reviews/{decision_id}/approve", headers=alice)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=bob)
    split = client.post(
        f"/v1/reviews/{decision_id}/override",
        json={"outcome": "decline", "reason": "exposure too high"},
        headers=bob,
    ).json()
    # escalation keeps four eyes: two reviewers who have not voted must agree
    assert split["status"] == "open" and split["level"] == 1 and split["required"] == 2
    assert client.get(f"/v1/decisions/{decision_id}", headers=caller).json()["status"] == "pending"
    for voter in (alice, bob):
        refused = client.post(f"/v1/reviews/{decision_id}/claim", headers=voter)
        assert_refused(refused, 403, "forbidden")
    for who in (carol, dave):
        client.post(f"/v1/reviews/{decision_id}/claim", headers=who)
        done = client.post(
            f"/v1/reviews/{decision_id}/override",
            json={"outcome": "decline", "reason": "agree with bob"},
            headers=who,
        ).json()
    assert done["status"] == "decided" and done["outcome"] == "decline"
    history = client.get(f"/v1/reviews/{decision_id}", headers=carol).json()["history"]
    escalated = [e for e in history if e["type"] == "review.escalated"]
    assert len(escalated) == 1 and escalated[0]["actor"] == "policy"


def test_an_expired_lease_frees_the_task(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers, clock: Clock
) -> None:
    decision_id = decide(client, caller)
    client.post(f"/v1/reviews/{decision_id}/claim", headers=alice)
    clock.advance(14 * 60)
    assert client.post(f"/v1/reviews/{decision_id}/claim", headers=bob).status_code == 409
    clock.advance(2 * 60)  # past the 15 minute lease
    late = client.post(f"/v1/reviews/{decision_id}/approve", headers=alice)
    assert_refused(late, 409, "conflict", contains="claim expired")
    assert client.post(f"/v1/reviews/{decision_id}/claim", headers=bob).status_code == 200
    assert client.post(f"/v1/reviews/{decision_id}/approve", headers=bob).status_code == 200


def test_sla_expiry_applies_the_safe_outcome_once(
    client: TestClient, caller: Headers, engine: Engine, clock: Clock, desk: ReviewDesk
) -> None:
    decision_id = decide(client, caller)
    clock.advance(4 * 3600 - 1)
    assert desk.expire_due() == 0
    clock.advance(2)
    replica = ReviewDesk(engine, clock=clock)  # a second replica racing for the same task
    assert desk.expire_due() + replica.expire_due() == 1
    final = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert final["status"] == "final" and final["outcome"] == "decline"
    assert final["reasons"][-1]["code"] == "sla_expired"
    assert "4h" in final["reasons"][-1]["message"]
    with engine.db.connect() as conn:
        expired = conn.execute(
            sa.select(events.c.actor, events.c.body).where(
                events.c.decision_id == decision_id, events.c.type == "review.expired"
            )
        ).all()
    assert len(expired) == 1 and expired[0].actor == "policy"
    assert '"decided_by":"policy"' in expired[0].body


def test_expiry_happens_after_a_restart(tmp_path: Path, db: sa.Engine, clock: Clock) -> None:
    points = load_points(review_points(tmp_path / "restart"))
    first = Engine(points, db, actor="test")
    decision = first.decide("loan_approval", REVIEW_INPUT, actor="caller")
    first.close()  # the server stops with the task still open
    clock.advance(5 * 3600)
    second = Engine(points, db, actor="test")
    try:
        assert ReviewDesk(second, clock=clock).expire_due() == 1
        assert second.get(decision.id).outcome == "decline"
    finally:
        second.close()


def test_sla_escalates_to_the_next_group_first(tmp_path: Path, db: sa.Engine, clock: Clock) -> None:
    text = LOAN_WITH_REVIEW.replace(
        "  lease: 15m\n", "  lease: 15m\n  escalate_to: [credit-heads]\n"
    )
    engine = Engine(load_points(review_points(tmp_path / "esc", text)), db, actor="test")
    try:
        desk = ReviewDesk(engine, clock=clock)
        decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller")
        clock.advance(4 * 3600 + 300)  # the clock was read before the engine started
        assert desk.expire_due() == 1
        task = desk.task(decision.id)
        assert task.level == 1 and task.groups == ["credit-heads"] and task.status.value == "open"
        _, officer = reviewer(engine, "officer")
        _, head = token(engine, ["reviewer"], groups=["credit-heads"], name="head")
        with pytest.raises(Exception, match="credit-heads"):
            desk.claim(officer, decision.id)
        desk.claim(head, decision.id)
        clock.advance(4 * 3600 + 1)
        assert desk.expire_due() == 1
        assert engine.get(decision.id).outcome == "decline"
        assert_state_agrees(db)  # escalation and expiry follow from their events
    finally:
        engine.close()


def test_list_filters_and_paginates(
    client: TestClient, caller: Headers, alice: Headers, engine: Engine
) -> None:
    ids = [decide(client, caller) for _ in range(5)]
    client.post(f"/v1/reviews/{ids[0]}/claim", headers=alice)
    page = client.get("/v1/reviews?limit=2", headers=alice).json()
    assert [t["decision_id"] for t in page["data"]] == ids[:2] and page["next_cursor"]
    rest = client.get(f"/v1/reviews?limit=10&cursor={page['next_cursor']}", headers=alice).json()
    assert [t["decision_id"] for t in rest["data"]] == ids[2:] and rest["next_cursor"] is None
    mine = client.get("/v1/reviews?claimed=mine", headers=alice).json()["data"]
    assert [t["decision_id"] for t in mine] == ids[:1]
    free = client.get("/v1/reviews?claimed=free", headers=alice).json()["data"]
    assert len(free) == 4
    counts = client.get("/v1/reviews/counts", headers=alice).json()
    assert counts == [
        {
            "point": "loan_approval",
            "open": 5,
            "claimed": 1,
            "escalated": 0,
            "overdue": 0,
            "next_due_at": counts[0]["next_due_at"],
        }
    ]
    refund_only, _ = token(engine, ["reviewer"], points=["refund_agent"])
    assert client.get("/v1/reviews", headers=refund_only).json()["data"] == []
    assert client.get("/v1/reviews?status=bogus", headers=alice).status_code == 400


def test_claim_next_takes_the_oldest_free_task(
    client: TestClient, caller: Headers, alice: Headers, bob: Headers
) -> None:
    first, second = decide(client, caller), decide(client, caller)
    assert client.post("/v1/reviews/claim", headers=alice).json()["decision_id"] == first
    assert client.post("/v1/reviews/claim", json={}, headers=bob).json()["decision_id"] == second
    none_left = client.post("/v1/reviews/claim", headers=bob)
    assert_refused(none_left, 404, "not_found", "point")


def test_long_poll_returns_when_the_decision_is_final(
    client: TestClient, caller: Headers, alice: Headers, desk: ReviewDesk, engine: Engine
) -> None:
    import threading

    decision_id = decide(client, caller)
    pending = client.get(f"/v1/decisions/{decision_id}?wait=0.2", headers=caller)
    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    _, principal = reviewer(engine, "dora")

    def review() -> None:
        desk.claim(principal, decision_id)
        desk.approve(principal, decision_id)

    timer = threading.Timer(0.3, review)
    timer.start()
    final = client.get(f"/v1/decisions/{decision_id}?wait=10", headers=caller)
    timer.join()
    assert final.json()["status"] == "final" and final.json()["outcome"] == "approve"
    assert client.get(f"/v1/decisions/{decision_id}?wait=61", headers=caller).status_code == 400
