"""`warden serve --server granian` serves the same API as uvicorn: decisions, the request
limits enforced before any route, and a clean stop."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.reviewing import AUTO_INPUT, REVIEW_INPUT
from tests.serving import serve
from warden.cli.app import app as cli

pytest.importorskip("granian")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_granian_serves_the_same_api(tmp_path: Path) -> None:
    proc, url, secret = serve(
        tmp_path, "--server", "granian", env={"WARDEN_MAX_BODY_BYTES": "4096"}
    )
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            auto = client.post(
                "/v1/decisions", json={"point": "loan_approval", "input": AUTO_INPUT}
            )
            assert auto.status_code == 200, auto.text
            assert auto.json()["status"] == "final"
            review = client.post(
                "/v1/decisions", json={"point": "loan_approval", "input": REVIEW_INPUT}
            )
            assert review.status_code == 202 and review.json()["route"] == "review"
            again = client.get(f"/v1/decisions/{auto.json()['id']}")
            assert again.json() == auto.json()
            nul = client.post("/v1/decisions?x=%00", json={"point": "loan_approval"})
            assert nul.status_code == 400 and nul.json()["error"]["field"] == "x"
            big = client.post("/v1/decisions", content=b"{" + b" " * 5000 + b"}")
            assert big.status_code == 413
            anonymous = client.post("/v1/decisions", headers={"Authorization": ""}, json={})
            assert anonymous.status_code == 401
        workers = _children(proc.pid)
        assert workers, "granian serves from a worker process"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_serve_names_the_servers_it_knows() -> None:
    result = CliRunner().invoke(cli, ["serve", "--server", "gunicorn"])
    assert result.exit_code == 2
    assert "uvicorn" in result.output and "granian" in result.output
