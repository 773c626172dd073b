"""Shared fixtures: a database on each backend, and decision point files for tests."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate

POSTGRES_ENV = "WARDEN_TEST_POSTGRES_URL"

# Properties are judged by what they find, not by how fast an example runs: on a shared
# 2-core machine one example of pure in-memory code can take longer than Hypothesis's 200 ms.
settings.register_profile("warden", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("warden")

TOY_MODEL = '''
import time


def predict(input):
    """A model whose behaviour the test controls through `input.mode`."""
    mode = input.get("mode", "ok")
    if mode == "error":
        raise RuntimeError("model exploded")
    if mode == "slow":
        time.sleep(2)
    if mode == "bad_outcome":
        return "maybe", 0.99
    if mode == "bad_confidence":
        return "approve", 1.7
    confidence = min(1.0, max(0.0, (input["credit_score"] - 300) / 550))
    return ("approve" if confidence >= 0.5 else "decline"), confidence
'''

LOAN_POINT = """
point: loan_approval
owner: credit-risk@example.com
description: Consumer loan decisions
input:
  type: object
  required: [amount, income, credit_score]
  additionalProperties: false
  properties:
    amount: {type: number, minimum: 0}
    income: {type: number, minimum: 0}
    credit_score: {type: integer, minimum: 300, maximum: 850}
    country: {type: string}
    mode: {type: string}
model:
  kind: callable
  function: toy_model:predict
  version: "7"
  timeout_ms: 500
outcomes: [approve, decline]
rules:
  refuse:
    - {id: blocked_country, when: "has(input.country) && input.country in ['XX']",
       reason: "sanctioned country"}
  review:
    - {id: large_amount, when: "input.amount > 50000", reason: "above delegated authority"}
    - {id: low_confidence, when: "confidence < 0.85"}
  auto:
    - {id: confident, when: "confidence >= 0.85"}
failure:
  on_error: review
  on_kill: review
  breaker: {failure_rate: 0.5, window: 10, min_calls: 4, open_for: 60s, half_open_calls: 2}
"""

AGENT_POINT = """
point: refund_agent
owner: support-ops@example.com
input:
  type: object
  required: [order_id, amount]
  properties:
    order_id: {type: string}
    amount: {type: number, minimum: 0}
model:
  kind: proposal
outcomes: [refund, deny]
rules:
  review:
    - {id: big_refund, when: "input.amount > 500"}
  auto:
    - {id: small_refund, when: "output == 'refund' && confidence >= 0.9"}
    - {id: deny_ok, when: "output == 'deny'"}
failure:
  on_error: deny
"""


def write_points(folder: Path, *texts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_model.py").write_text(TOY_MODEL)
    for text in texts:
        name = text.split("point:", 1)[1].split()[0]
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


@pytest.fixture(autouse=True)
def warden_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test, and every server or CLI process it starts, keeps its state (database,
    ledger key) in its own folder — never in the working tree."""
    home = tmp_path / "home"
    monkeypatch.setenv("WARDEN_HOME", str(home))
    return home


@pytest.fixture
def points_dir(tmp_path: Path) -> Path:
    return write_points(tmp_path / "points", LOAN_POINT, AGENT_POINT)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend. PostgreSQL uses a schema per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warden.db'}"
        return
    yield from postgres_schema_url()


def postgres_schema_url() -> Iterator[str]:
    """The URL of a fresh, empty schema on the test PostgreSQL, dropped afterwards (skips the
    test when WARDEN_TEST_POSTGRES_URL is unset). For a fixture: `yield from` it."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(points_dir: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(points_dir), db, actor="test")
    yield eng
    eng.close()
