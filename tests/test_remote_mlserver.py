"""kind: remote, protocol v2, against a real MLServer serving a scikit-learn model.

MLServer pins FastAPI, Starlette and protobuf below the versions Warden runs on, so it lives in
its own virtualenv, built once from PyPI into the user's cache (or WARDEN_TEST_MLSERVER_VENV).
The model is trained by that environment's own scikit-learn, which also writes the probabilities
the test expects, so no pickle crosses scikit-learn versions.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from warden.models import GuardedModel, ModelFailure, Prediction, load_model
from warden.policy.schema import BreakerSpec, DecisionPointSpec, FailureSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("mlserver"),  # one server per run
    pytest.mark.timeout(1800),  # the first test may build the virtualenv and start the server
]

REQUIREMENTS = ["mlserver>=1.6,<2", "mlserver-sklearn>=1.6,<2"]
OUTCOMES = ["decline", "approve", "refer"]
LABELS = {"0": "decline", "1": "approve", "2": "refer"}

TRAIN = """
import json, sys
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

folder = sys.argv[1]
rng = np.random.default_rng(13)
X = np.column_stack([rng.uniform(0, 8000, 600), rng.uniform(0, 60000, 600)])
margin = X[:, 0] * 8 - X[:, 1]
y = np.where(margin > 8000, 1, np.where(margin < -12000, 0, 2))
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
joblib.dump(model, f"{folder}/model.joblib")
probe = np.column_stack([rng.uniform(0, 8000, 50), rng.uniform(0, 60000, 50)])
json.dump(
    {
        "classes": [str(c) for c in model.classes_],
        "rows": probe.tolist(),
        "proba": model.predict_proba(probe).tolist(),
    },
    open(f"{folder}/expected.json", "w"),
)
"""


@dataclass
class Served:
    url: str
    classes: list[str]
    rows: list[list[float]]
    proba: list[list[float]]


def _venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("WARDEN_TEST_MLSERVER_VENV") or cache / "warden" / "mlserver-venv")


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = [str(python), "-c", "import mlserver, mlserver_sklearn"]
    return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0


def _mlserver_python() -> Path:
    """The venv's interpreter, building the venv first where it is missing (under a lock, so
    parallel test workers build it once)."""
    root = _venv()
    python = root / "bin" / "python"
    if _works(python):
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _works(python):
            return python
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(root)],
            [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            except subprocess.TimeoutExpired:
                pytest.skip(f"installing MLServer into {root} took over 20 minutes")
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                pytest.skip(
                    f"MLServer cannot be installed into {root} ({' / '.join(tail)}); it needs "
                    f"PyPI access for {' '.join(REQUIREMENTS)}"
                )
    if not _works(python):
        pytest.skip(f"{root} was built but cannot import mlserver and mlserver_sklearn")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    python = _mlserver_python()
    folder = tmp_path_factory.mktemp("mlserver")
    subprocess.run([str(python), "-c", TRAIN, str(folder)], check=True, timeout=300)
    port = _free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": 0,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "credit",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    start = "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; main()"
    with open(folder / "mlserver.log", "w") as log:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [str(python), "-c", start, "start", str(folder)],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # MLServer imports a lot; CI machines are busy
        while True:
            if process.poll() is not None:
                pytest.fail(f"MLServer exited: {(folder / 'mlserver.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/models/credit/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"MLServer not ready: {(folder / 'mlserver.log').read_text()[-2000:]}")
            time.sleep(0.5)
        expected = json.loads((folder / "expected.json").read_text())
        yield Served(url, expected["classes"], expected["rows"], expected["proba"])
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def spec_for(served: Served, **remote: Any) -> DecisionPointSpec:
    return DecisionPointSpec.model_validate(
        {
            "point": "loan",
            "owner": "risk@example.com",
            "input": {"type": "object"},
            "model": {
                "kind": "remote",
                "version": "v1",
                "features": ["income", "amount"],
                "labels": LABELS,
                "timeout_ms": 10_000,
                "remote": {
                    "protocol": "v2",
                    "url": served.url,
                    "model": "credit",
                    "output": "predict_proba",
                    "classes": served.classes,
                    **remote,
                },
            },
            "outcomes": OUTCOMES,
            "rules": {},
        }
    )


def guarded(spec: DecisionPointSpec, tmp_path: Path) -> GuardedModel:
    model = load_model(spec.model, tmp_path)
    assert model is not None
    return GuardedModel(
        model,
        spec=spec.model,
        failure=FailureSpec(breaker=BreakerSpec(min_calls=100)),
        outcomes=spec.outcomes,
    )


def expected(served: Served) -> list[Prediction]:
    out = []
    for proba in served.proba:
        best = max(range(len(proba)), key=lambda i: proba[i])
        out.append(Prediction(LABELS[served.classes[best]], proba[best]))
    return out


def inputs(served: Served) -> list[dict[str, float]]:
    return [{"income": income, "amount": amount} for income, amount in served.rows]


def test_mlserver_predictions_equal_the_models_own(mlserver: Served, tmp_path: Path) -> None:
    model = guarded(spec_for(mlserver, model_version="v1"), tmp_path)
    want = expected(mlserver)
    assert {p.outcome for p in want} == set(OUTCOMES)  # the probe reaches every class
    got = [model.call(x) for x in inputs(mlserver)[:10]]
    for g, w in zip(got, want[:10], strict=True):
        assert g.outcome == w.outcome
        assert g.confidence == pytest.approx(w.confidence, rel=1e-9)


def test_mlserver_batch_is_one_vectorised_request(mlserver: Served, tmp_path: Path) -> None:
    model = guarded(spec_for(mlserver), tmp_path)
    rows = inputs(mlserver)
    rows.insert(7, {"income": 1.0})  # no amount: this row alone fails
    got = model.call_many(rows)
    bad = got.pop(7)
    assert isinstance(bad, ModelFailure) and bad.code == "model_error" and "'amount'" in bad.message
    assert [g.outcome for g in got if isinstance(g, Prediction)] == [
        w.outcome for w in expected(mlserver)
    ]
    assert all(
        isinstance(g, Prediction) and g.confidence == pytest.approx(w.confidence, rel=1e-9)
        for g, w in zip(got, expected(mlserver), strict=True)
    )


def test_mlserver_errors_take_the_failure_path(mlserver: Served, tmp_path: Path) -> None:
    unknown = guarded(spec_for(mlserver, model="no_such_model"), tmp_path)
    with pytest.raises(ModelFailure) as raised:
        unknown.call({"income": 1.0, "amount": 2.0})
    assert raised.value.code == "model_error" and "HTTP 404" in raised.value.message
    wrong_output = guarded(spec_for(mlserver, output="predict"), tmp_path)
    with pytest.raises(ModelFailure) as raised:
        wrong_output.call({"income": 1.0, "amount": 2.0})
    assert raised.value.code == "invalid_output"
    assert "1 columns per row but model.remote.classes lists 3" in raised.value.message
