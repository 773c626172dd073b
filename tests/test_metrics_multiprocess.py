"""`warden serve --workers 2`: /metrics counts every worker's decisions, whichever answers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring import applications, monitored_points
from tests.serving import serve_workers
from warden.auth.tokens import create_token
from warden.store.database import create_engine, migrate
from warden.store.recorder import Recorder

pytestmark = pytest.mark.slow


def _decided(text: str) -> float:
    families = text_string_to_metric_families(text)
    return sum(
        s.value
        for f in families
        if f.name == "warden_decisions"
        for s in f.samples
        if s.name == "warden_decisions_total"
    )


@pytest.mark.timeout(600)
def test_metrics_merge_across_workers(tmp_path: Path) -> None:
    points = monitored_points(tmp_path / "points")
    db_url = f"sqlite:///{tmp_path / 'warden.db'}"
    db = create_engine(db_url)
    migrate(db)
    recorder = Recorder(db)
    secret, _ = create_token(recorder, name="load", roles=["caller"], points=["*"], actor="test")
    recorder.close()
    db.dispose()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "WARDEN_CONFIG": str(points),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(tmp_path / "home"),
    }
    log = tmp_path / "serve.log"
    with serve_workers(env, log) as (_server, base):
        sent = 60
        headers = {"Authorization": f"Bearer {secret}"}
        for item in applications(np.random.default_rng(1), sent):
            # a new connection per request, so both workers take their share
            response = httpx.post(
                f"{base}/v1/decisions",
                json={"point": "loan_approval", "input": item},
                headers=headers,
            )
            assert response.status_code in (200, 202), response.text
        scrapes = [_decided(httpx.get(f"{base}/metrics", timeout=5).text) for _ in range(6)]
        assert scrapes == [sent] * 6
        written = {p.name.split("_")[0] for p in (tmp_path / "home" / "prometheus").glob("*.db")}
        assert "counter" in written and "gauge" in written
        counted_by = list((tmp_path / "home" / "prometheus").glob("counter_*.db"))
        assert len(counted_by) == 2, counted_by  # both workers decided, one scrape sums them
