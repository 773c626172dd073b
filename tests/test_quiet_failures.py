"""Failures that used to pass silently: a vectorised model call that raised, a killed point's
model still being called, a SQLite write-ahead log that was never cut back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from warden.engine import Engine
from warden.ledger.chain import EventDraft
from warden.models import GuardedModel, Prediction
from warden.monitor.metrics import REGISTRY
from warden.policy.schema import FailureSpec, ModelSpec
from warden.store.database import create_engine, migrate
from warden.store.recorder import Change, Recorder

APPLICATION = {"amount": 1000, "income": 5000, "credit_score": 800}


class _BrokenBatches:
    version = "vb"

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        return Prediction("yes", 0.9)

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        raise ValueError("vectorised call exploded")


def test_a_failing_vectorised_call_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = GuardedModel(
        _BrokenBatches(),
        spec=ModelSpec(kind="callable", function="m:f", version="vb"),
        failure=FailureSpec(),
        outcomes=["yes", "no"],
    )
    labels = {"model_version": "vb"}
    before = REGISTRY.get_sample_value("warden_model_batch_fallbacks_total", labels) or 0.0
    with caplog.at_level(logging.WARNING, logger="warden.models.guard"):
        answers = model.call_many([{}, {}])
    assert [a.outcome for a in answers] == ["yes", "yes"]  # type: ignore[union-attr]
    assert REGISTRY.get_sample_value("warden_model_batch_fallbacks_total", labels) == before + 1
    assert "vectorised call of model vb failed" in caplog.text


def test_a_killed_point_never_calls_its_model(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("call", "call_async", "call_many"):
        original = getattr(GuardedModel, name)

        def spy(self: GuardedModel, *args: Any, _name: str = name, _f: Any = original) -> Any:
            calls.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(GuardedModel, name, spy)
    engine.decide("loan_approval", APPLICATION)
    assert calls == ["call"]  # the spy sees calls
    calls.clear()
    engine.set_kill("loan_approval", True, actor="test", reason="incident")
    decided = [
        engine.decide("loan_approval", APPLICATION),
        asyncio.run(engine.decide_async("loan_approval", APPLICATION)),
        *engine.decide_many("loan_approval", [APPLICATION, APPLICATION]),
    ]
    assert calls == []
    assert {(d.route.value, d.reasons[0].code) for d in decided} == {("review", "kill_switch")}


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_sqlite_log_is_truncated_when_idle_and_at_close(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    db = create_engine(f"sqlite:///{path}")
    migrate(db)
    recorder = Recorder(db)
    try:
        for _ in range(50):
            recorder.record(Change(events=[EventDraft("test.event", "t", {"blob": "x" * 4000})]))
        assert _wal(path) > 100_000
        deadline = time.monotonic() + 30
        while _wal(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _wal(path) == 0  # idle: folded back and cut to nothing
        for _ in range(20):
            recorder.record(Change(events=[EventDraft("test.event", "t", {"blob": "y" * 4000})]))
        assert _wal(path) > 0
    finally:
        recorder.close()
    assert _wal(path) == 0  # at close
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 70
    db.dispose()


def test_a_failing_checkpoint_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from warden.store.walcheckpoint import WalCheckpointer

    class Broken:
        def cursor(self) -> Any:
            raise sa.exc.OperationalError("PRAGMA", {}, Exception("disk I/O error"))

    with caplog.at_level(logging.WARNING, logger="warden.store.walcheckpoint"):
        assert WalCheckpointer._checkpoint(Broken(), "PASSIVE") is None
    assert "WAL checkpoint (PASSIVE) failed" in caplog.text
