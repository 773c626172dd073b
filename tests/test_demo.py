"""The demo: deterministic data, a usable model, a valid point file, and a real run."""

from __future__ import annotations

import io
import itertools
import socket
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pytest
import sqlalchemy as sa
from rich.console import Console

from warden.api.app import create_app
from warden.demo import DemoError, run_demo
from warden.demo.data import BLOCKED_COUNTRY, FEATURES, applications, training_set
from warden.demo.point import FILE_NAME, write_point
from warden.demo.server import BackgroundServer, bind
from warden.demo.setup import prepare
from warden.demo.traffic import Traffic
from warden.demo.train import MODEL_VERSION, train
from warden.policy.loader import load_point
from warden.store.database import create_engine, sqlite_url
from warden.store.schema import decisions

ROUTES = {"auto", "review", "fallback", "refused"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_training_data_is_deterministic() -> None:
    x1, y1 = training_set(500, seed=7)
    x2, y2 = training_set(500, seed=7)
    x3, _ = training_set(500, seed=8)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (500, len(FEATURES))
    assert set(y1) == {"approve", "decline"}
    scores = x1[:, FEATURES.index("credit_score")]
    assert scores.min() >= 300 and scores.max() <= 850


def test_application_stream_is_deterministic_and_json_ready() -> None:
    first = list(itertools.islice(applications(seed=3), 300))
    again = list(itertools.islice(applications(seed=3), 300))
    assert first == again
    assert {type(v) for a in first for v in a.input.values()} <= {float, int, str}
    assert set(first[0].input) == {*FEATURES, "country"}
    assert first[0].right_outcome in ("approve", "decline")


def test_incomes_drift_from_the_given_application_on() -> None:
    stream = list(itertools.islice(applications(seed=3, drift_after=1000), 2000))
    plain = list(itertools.islice(applications(seed=3), 1000))
    assert stream[:1000] == plain
    before = np.mean([a.input["income"] for a in stream[:1000]])
    after = np.mean([a.input["income"] for a in stream[1000:]])
    assert after < 0.85 * before


def test_trained_model_is_accurate_with_outcome_classes(tmp_path: Path) -> None:
    trained = train(tmp_path / "credit.joblib")
    assert trained.accuracy > 0.7
    assert trained.version == MODEL_VERSION
    model = joblib.load(trained.path)
    assert list(model.classes_) == ["approve", "decline"]
    x, _ = training_set(50, seed=99)
    assert np.allclose(model.predict_proba(x).sum(axis=1), 1.0)


def test_point_file_loads_and_matches_the_model(tmp_path: Path) -> None:
    path, edited = write_point(tmp_path / "points")
    assert path.name == FILE_NAME and not edited
    point = load_point(path)
    assert point.spec.model.features == list(FEATURES)
    assert point.spec.model.version == MODEL_VERSION
    assert point.spec.outcomes == ["approve", "decline"]
    assert point.spec.sampling.review_rate == 0.02
    assert f"'{BLOCKED_COUNTRY}'" in point.spec.rules.refuse[0].when


def test_an_edited_point_file_is_kept(tmp_path: Path) -> None:
    path, _ = write_point(tmp_path)
    path.write_text(path.read_text().replace("0.85", "0.9"))
    again, edited = write_point(tmp_path)
    assert edited and "0.9" in again.read_text()


def test_a_taken_port_is_reported_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        console = Console(file=io.StringIO(), width=200)
        with pytest.raises(DemoError) as caught:
            run_demo(tmp_path, port=port, duration=1, console=console)
    assert caught.value.field == "port"
    assert "--port" in caught.value.message
    assert "already in use" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_traffic_stops_after_max_decisions_and_posts_ground_truth(tmp_path: Path) -> None:
    setup = prepare(tmp_path)
    server = BackgroundServer(create_app(setup.engine), bind("127.0.0.1", 0))
    try:
        server.start(f"http://127.0.0.1:{server.port}/readyz")
        traffic = Traffic(
            server.port,
            setup.caller_token,
            rate=200,
            duration=10,
            max_decisions=12,
            outcome_share=1.0,
            outcome_delay=0.1,
        )
        traffic.start()
        assert traffic.wait(20)
        counts = traffic.counts()
    finally:
        server.stop()
        setup.close()
    assert counts.total == 12 and counts.errors == 0, counts.last_error
    assert counts.outcomes == counts.total - counts.routes.get("refused", 0)


@pytest.mark.slow
def test_run_demo_decides_and_records(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    out = io.StringIO()
    summary = run_demo(
        home, port=free_port(), duration=3, rate=20, console=Console(file=out, width=200)
    )
    assert summary.total > 0
    assert summary.errors == 0
    assert set(summary.routes) <= ROUTES
    db = create_engine(sqlite_url(home))
    try:
        with db.connect() as conn:
            stored = Counter(conn.execute(sa.select(decisions.c.route)).scalars())
            truths = conn.execute(
                sa.select(sa.func.count()).where(decisions.c.ground_truth.is_not(None))
            ).scalar_one()
    finally:
        db.dispose()
    assert dict(stored) == summary.routes
    assert set(stored) <= ROUTES and stored["auto"] > 0
    assert truths == summary.outcomes_recorded
    text = out.getvalue()
    assert f"{summary.url}/docs" in text
    assert "curl -s" in text and "Idempotency-Key" in text
    assert (home / "points" / FILE_NAME).is_file()
    assert (home / "models" / "credit.joblib").is_file()


def test_a_rerun_shows_inherited_protection_and_fresh_forgets_it(tmp_path: Path) -> None:
    from warden.demo.screen import intro
    from warden.demo.setup import reset
    from warden.demo.train import BROKEN_FILE

    setup = prepare(tmp_path)
    try:
        assert setup.inherited == []
        assert (tmp_path / BROKEN_FILE).is_file()  # the README's bad-model rollback uses it
        setup.engine.set_kill("loan_approval", True, actor="test", reason="drift seen")
    finally:
        setup.close()
    setup.point_file.write_text(setup.point_file.read_text().replace("0.85", "0.9"))
    again = prepare(tmp_path)
    try:
        (held,) = again.inherited
        assert held.what == "kill switch" and "drift seen" in held.why
        out = io.StringIO()
        intro(Console(file=out, width=80), again, url="http://x", rate=1, drift_after=None)
        text = out.getvalue()
        assert "Left engaged by an earlier run" in text
        assert any(
            line.strip().endswith("resume loan_approval --reason 'checked'")
            for line in text.splitlines()
        )
        assert "demo --fresh" in text
    finally:
        again.close()
    reset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["points"]
    fresh = prepare(tmp_path)
    try:
        assert fresh.inherited == [] and fresh.point_edited  # the edited file is kept
    finally:
        fresh.close()


def test_printed_commands_work_without_warden_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex
    import sys

    from warden.demo.screen import warden_command

    installed = Path(sys.executable).parent / "warden"
    if not installed.is_file():
        pytest.skip("no warden script next to this interpreter")
    monkeypatch.setenv("PATH", str(tmp_path))  # not on PATH, as after `make demo`
    command = Path(shlex.split(warden_command())[0])
    assert command.resolve() == installed.resolve()
    monkeypatch.setenv("PATH", str(installed.parent))
    assert warden_command() == "warden"


@pytest.mark.slow
def test_the_demo_server_signs_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from warden.ledger.checkpoint import latest

    monkeypatch.setenv("WARDEN_CHECKPOINT_SECONDS", "0.5")
    home = tmp_path / "demo"
    run_demo(home, port=free_port(), duration=3, rate=20, console=Console(file=io.StringIO()))
    db = create_engine(sqlite_url(home))
    try:
        with db.connect() as conn:
            assert latest(conn) is not None
    finally:
        db.dispose()
