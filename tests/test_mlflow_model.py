"""kind: mlflow — MLflow model folders decide through the engine and register through the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LinearRegression, LogisticRegression
from typer.testing import CliRunner

from warden.cli.app import app
from warden.decision import Route
from warden.engine import Engine
from warden.errors import InvalidRequest
from warden.models import ModelFailure, ModelLoadError, load_model
from warden.policy.loader import load_point, load_points
from warden.policy.schema import ModelSpec
from warden.rollout.registry import Registry
from warden.store.database import create_engine
from warden.store.recorder import Recorder
from warden.store.schema import model_artifacts, model_versions

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
pd = pytest.importorskip("pandas")
pyfunc = pytest.importorskip("mlflow.pyfunc")
mlflow_sklearn = pytest.importorskip("mlflow.sklearn")

FEATURES = ["amount", "income", "credit_score"]
SMOKE = {"amount": 1000.0, "income": 5000.0, "credit_score": 700}
INPUTS = [
    {"amount": 1000.0, "income": 5000.0, "credit_score": 700},
    {"amount": 30000, "income": 2000, "credit_score": 420},
    {"amount": 5000.5, "income": 5000, "credit_score": 601},
    {"amount": 100, "income": 9000.25, "credit_score": 599},
]

POINT = """
point: credit
owner: risk@example.com
input:
  type: object
  required: [amount, income, credit_score]
  properties:
    amount: {type: number}
    income: {type: number}
    credit_score: {type: integer}
model:
  kind: mlflow
  path: model
  features: [amount, income, credit_score]
  version: mlflow-1
outcomes: [approve, decline]
rules:
  auto:
    - {id: confident, when: "confidence >= 0.5"}
"""


class RuleModel(pyfunc.PythonModel):
    """Approves scores above 600 with the income share as confidence, so a swapped column shows.

    `shape` picks how the answer comes back; 'labels' is a shape Warden does not accept.
    """

    def __init__(self, shape: str = "frame", approve_above: int = 600) -> None:
        self.shape = shape
        self.approve_above = approve_above

    def predict(self, context, model_input, params=None):
        approve = (model_input["credit_score"] > self.approve_above).to_numpy()
        share = (model_input["income"] / (model_input["income"] + model_input["amount"])).to_numpy()
        outcome = np.where(approve, "approve", "decline")
        if self.shape == "frame":
            return pd.DataFrame({"outcome": outcome, "confidence": share})
        if self.shape == "rows":
            return [{"outcome": o, "confidence": c} for o, c in zip(outcome, share, strict=True)]
        if self.shape == "probabilities":
            yes = np.where(approve, share, 1 - share)
            return {"yes": yes.tolist(), "no": (1 - yes).tolist()}
        if self.shape == "scalars":
            return {"outcome": str(outcome[0]), "confidence": float(share[0])}
        return outcome


def rule(input: dict[str, Any], approve_above: int = 600) -> tuple[str, float]:
    share = float(input["income"]) / (float(input["income"]) + float(input["amount"]))
    return ("approve" if input["credit_score"] > approve_above else "decline"), share


def training_frame(seed: int = 1) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.uniform(500, 40000, 400),
            "income": rng.uniform(1000, 15000, 400),
            "credit_score": rng.integers(300, 851, 400),
        }
    )
    labels = np.where(frame["credit_score"] > 600, "approve", "decline")
    return frame, labels


def save_sklearn(path: Path, estimator: Any, frame: Any) -> Path:
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hints about integer columns and pickle formats
        signature = infer_signature(frame, estimator.predict(frame))
        mlflow_sklearn.save_model(estimator, path, signature=signature)
    return path


def save_python(path: Path, model: RuleModel, *, signature: bool = True) -> Path:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [ColSpec("double", "amount"), ColSpec("double", "income"), ColSpec("long", "credit_score")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyfunc.save_model(
            path,
            python_model=model,
            signature=ModelSignature(inputs) if signature else None,
            pip_requirements=["mlflow-skinny", "pandas"],  # listed, so not inferred: faster
        )
    return path


def manifest_digest(folder: Path) -> str:
    """The folder digest, computed here independently: sha256 of the `sha256sum` lines."""
    files = sorted(
        (p.relative_to(folder).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("".join(f"{h}  {n}\n" for n, h in files).encode()).hexdigest()


def mlflow_spec(**extra: Any) -> ModelSpec:
    return ModelSpec(
        **{"kind": "mlflow", "path": "model", "features": FEATURES, "version": "m-1", **extra}
    )


@pytest.fixture
def points(tmp_path: Path) -> Path:
    folder = tmp_path / "points"
    folder.mkdir()
    (folder / "credit.yaml").write_text(textwrap.dedent(POINT))
    return folder


@pytest.fixture
def open_engine(points: Path, db: sa.Engine) -> Iterator[Any]:
    engines: list[Engine] = []

    def start() -> Engine:
        engines.append(Engine(load_points(points), db, actor="test"))
        return engines[-1]

    yield start
    for engine in engines:
        engine.close()


# -- deciding through the engine ----------------------------------------------------------


def test_sklearn_flavour_decides_like_the_estimator(points: Path, open_engine: Any) -> None:
    frame, labels = training_frame()
    estimator = LogisticRegression(max_iter=1000).fit(frame, labels)
    save_sklearn(points / "model", estimator, frame)
    engine = open_engine()
    decisions = [engine.decide("credit", x) for x in INPUTS]
    batch = engine.decide_many("credit", INPUTS)
    expected = estimator.predict_proba(pd.DataFrame(INPUTS, columns=FEATURES).astype(float))
    for single, many, probabilities in zip(decisions, batch, expected, strict=True):
        best = int(probabilities.argmax())
        assert single.proposed_outcome == many.proposed_outcome == estimator.classes_[best]
        assert single.confidence == pytest.approx(probabilities[best])
        assert many.confidence == pytest.approx(probabilities[best])
        assert single.model_version == "mlflow-1"
        assert single.route is Route.AUTO
    assert {d.proposed_outcome for d in decisions} == {"approve", "decline"}


def test_python_model_decides_outcome_and_confidence(points: Path, open_engine: Any) -> None:
    save_python(points / "model", RuleModel("frame"))
    engine = open_engine()
    for input in INPUTS:
        decision = engine.decide("credit", input)
        outcome, confidence = rule(input)
        assert decision.proposed_outcome == outcome
        assert decision.confidence == pytest.approx(confidence)
        assert decision.route is (Route.AUTO if confidence >= 0.5 else Route.REVIEW)
    batch = engine.decide_many("credit", INPUTS)
    assert [(d.proposed_outcome, d.confidence) for d in batch] == [
        (rule(x)[0], pytest.approx(rule(x)[1])) for x in INPUTS
    ]


def test_an_unsupported_output_is_an_invalid_output_failure(points: Path, open_engine: Any) -> None:
    save_python(points / "model", RuleModel("labels"))
    decision = open_engine().decide("credit", SMOKE)
    assert decision.route is Route.REVIEW and decision.proposed_outcome is None
    failure = next(r for r in decision.reasons if r.code == "invalid_output")
    assert "'outcome' and 'confidence'" in failure.message


def test_a_registered_version_decides_once_it_is_champion(
    points: Path, open_engine: Any, tmp_path: Path
) -> None:
    save_python(points / "model", RuleModel("frame"))
    strict = save_python(tmp_path / "strict", RuleModel("frame", approve_above=800))
    engine = open_engine()
    point = engine.points["credit"]
    engine.registry.register(
        point, version="strict-2", artifact=strict, actor="test", smoke_input=SMOKE
    )
    assert engine.decide("credit", SMOKE).proposed_outcome == "approve"
    engine.registry.set_alias("credit", "champion", "strict-2", actor="test", reason="stricter")
    decision = engine.decide("credit", SMOKE)  # the very next decision follows the move
    assert (decision.model_version, decision.proposed_outcome) == ("strict-2", "decline")


# -- the adapter --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["frame", "rows", "probabilities", "scalars"])
def test_accepted_output_shapes(tmp_path: Path, shape: str) -> None:
    save_python(tmp_path / "model", RuleModel(shape))
    model = load_model(mlflow_spec(labels={"yes": "approve", "no": "decline"}), tmp_path)
    assert model is not None and model.version == "m-1"
    for input in INPUTS:
        prediction = model.predict(input)
        outcome, confidence = rule(input)
        if shape == "probabilities":  # the larger of yes and no
            yes = confidence if outcome == "approve" else 1 - confidence
            outcome, confidence = ("approve", yes) if yes > 0.5 else ("decline", 1 - yes)
        assert prediction.outcome == outcome
        assert prediction.confidence == pytest.approx(confidence)


def test_labels_map_column_names_and_outcome_values(tmp_path: Path) -> None:
    save_python(tmp_path / "probabilities", RuleModel("probabilities"))
    unmapped = load_model(mlflow_spec(path="probabilities"), tmp_path)
    assert unmapped is not None and unmapped.predict(SMOKE).outcome == "yes"
    save_python(tmp_path / "model", RuleModel("frame"))
    mapped = load_model(mlflow_spec(labels={"approve": "accept"}), tmp_path)
    assert mapped is not None and mapped.predict(SMOKE).outcome == "accept"


def test_inputs_follow_the_signature_types(tmp_path: Path) -> None:
    save_python(tmp_path / "model", RuleModel())
    model = load_model(mlflow_spec(), tmp_path)
    assert model is not None
    assert model.predict({**SMOKE, "credit_score": 700.0}).outcome == "approve"
    with pytest.raises(ModelFailure, match=r"'credit_score' is 700\.5, not an integer"):
        model.predict({**SMOKE, "credit_score": 700.5})
    with pytest.raises(ModelFailure, match="input has no field 'income'"):
        model.predict({"amount": 1.0, "credit_score": 700})


def test_without_a_signature_features_are_numbers(tmp_path: Path) -> None:
    save_python(tmp_path / "model", RuleModel(), signature=False)
    model = load_model(mlflow_spec(), tmp_path)
    assert model is not None
    assert model.predict(SMOKE).outcome == "approve"
    with pytest.raises(ModelFailure, match="'amount' is 'lots', not a number"):
        model.predict({**SMOKE, "amount": "lots"})


def test_load_errors_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="has no MLmodel file"):
        load_model(mlflow_spec(), tmp_path)
    save_python(tmp_path / "model", RuleModel())
    with pytest.raises(ModelLoadError, match=r"signature with inputs .* but model.features"):
        load_model(mlflow_spec(features=["amount", "income"]), tmp_path)
    frame, labels = training_frame()
    regressor = LinearRegression().fit(frame, (labels == "approve").astype(float))
    save_sklearn(tmp_path / "regressor", regressor, frame)
    with pytest.raises(ModelLoadError, match="no predict_proba"):
        load_model(mlflow_spec(path="regressor"), tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ModelLoadError, match="MLflow cannot load"):
        load_model(mlflow_spec(path="broken"), tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc", None)  # makes the import fail
    with pytest.raises(ModelLoadError) as raised:
        load_model(mlflow_spec(), tmp_path)
    assert str(raised.value).startswith(
        "kind mlflow needs the optional extra: pip install 'warden-ai[mlflow]'"
    )


# -- the registry -------------------------------------------------------------------------


@pytest.fixture
def registry(db: sa.Engine, tmp_path: Path) -> Iterator[Registry]:
    recorder = Recorder(db)
    yield Registry(db, recorder, tmp_path / "cache")
    recorder.close()


def test_a_folder_round_trips_through_the_database(
    registry: Registry, points: Path, tmp_path: Path, db: sa.Engine
) -> None:
    save_python(points / "model", RuleModel())
    point = load_point(points / "credit.yaml")
    folder = save_python(tmp_path / "v2", RuleModel(approve_above=800))
    registered = registry.register(
        point, version="v2", artifact=folder, actor="t", smoke_input=SMOKE
    )
    assert registered.sha256 == manifest_digest(folder)
    elsewhere = Registry(db, registry.recorder, tmp_path / "other-cache")
    assert elsewhere.load(point, "v2").predict(SMOKE).outcome == "decline"

    unpacked = tmp_path / "other-cache" / registered.sha256 / "v2"
    (unpacked / "MLmodel").write_text("tampered")
    assert elsewhere.load(point, "v2").predict(SMOKE).outcome == "decline"  # unpacked anew
    assert manifest_digest(unpacked) == registered.sha256

    original = folder_archive(db)
    with db.begin() as conn:
        conn.execute(model_artifacts.update().values(content=b"not an archive"))
    with pytest.raises(ModelLoadError, match="not a folder archive"):
        elsewhere.load(point, "v2")
    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["MLmodel"] += b"\n# altered\n"
    altered = io.BytesIO()
    with zipfile.ZipFile(altered, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with db.begin() as conn:
        conn.execute(model_artifacts.update().values(content=altered.getvalue()))
    with pytest.raises(ModelLoadError, match="do not match its SHA-256"):
        elsewhere.load(point, "v2")


def folder_archive(db: sa.Engine) -> bytes:
    with db.connect() as conn:
        return bytes(conn.execute(sa.select(model_artifacts.c.content)).scalar_one())


def test_a_folder_is_refused_for_a_file_kind_and_a_file_for_mlflow(
    registry: Registry, points: Path, tmp_path: Path
) -> None:
    save_python(points / "model", RuleModel())
    point = load_point(points / "credit.yaml")
    stray = tmp_path / "model.pkl"
    stray.write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="no MLmodel file"):
        registry.register(point, version="v2", artifact=stray, actor="t", smoke_input=SMOKE)
    broken = save_python(tmp_path / "broken", RuleModel("labels"))
    with pytest.raises(InvalidRequest, match=r"smoke test.*'outcome' and 'confidence'"):
        registry.register(point, version="v3", artifact=broken, actor="t", smoke_input=SMOKE)
    assert registry.versions("credit") == []


# -- the CLI ------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli(points: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    save_python(points / "model", RuleModel())
    monkeypatch.setenv("WARDEN_CONFIG", str(points))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    return db_url


def register(folder: Path, version: str) -> Any:
    return runner.invoke(
        app,
        [
            "model",
            "register",
            "credit",
            "--version",
            version,
            "--path",
            str(folder),
            "--smoke-input",
            json.dumps(SMOKE),
        ],
    )


def test_cli_registers_a_folder_with_a_stable_hash(cli: str, tmp_path: Path) -> None:
    folder = save_python(tmp_path / "v2", RuleModel(approve_above=800))
    first = register(folder, "v2")
    assert first.exit_code == 0, first.output
    digest = manifest_digest(folder)
    assert f"sha256 {digest[:12]}" in first.output

    copy = shutil.copytree(folder, tmp_path / "copy" / "other-name")
    for path in copy.rglob("*"):
        os.utime(path, (0, 0))
    assert register(copy, "v3").exit_code == 0
    (copy / "requirements.txt").write_text("changed\n")
    assert register(copy, "v4").exit_code == 0

    db = create_engine(cli)
    with db.connect() as conn:
        rows = conn.execute(sa.select(model_versions.c.version, model_versions.c.sha256))
        stored = {version: sha256 for version, sha256 in rows}
        artifacts = conn.execute(sa.select(sa.func.count()).select_from(model_artifacts)).scalar()
    db.dispose()
    assert stored["v2"] == stored["v3"] == digest
    assert stored["v4"] == manifest_digest(copy) != digest
    assert artifacts == 2


def test_cli_refuses_a_folder_without_mlmodel(cli: str, tmp_path: Path) -> None:
    folder = save_python(tmp_path / "v2", RuleModel())
    (folder / "MLmodel").unlink()
    result = register(folder, "v2")
    assert result.exit_code == 1
    assert "is not an MLflow model folder: it has no MLmodel file" in result.output.replace(
        "\n", ""
    )
