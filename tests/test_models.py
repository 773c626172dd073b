from __future__ import annotations

import math
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from warden.models import (
    BreakerState,
    GuardedModel,
    ModelFailure,
    ModelLoadError,
    Prediction,
    check_prediction,
    load_model,
)
from warden.models.callable import CallableModel
from warden.models.workers import WorkerPool
from warden.policy.schema import BreakerSpec, FailureSpec, ModelSpec

OUTCOMES = ["approve", "deny", "refer"]
FEATURES = ["income", "debt", "age"]
LABELS = {"0": "deny", "1": "approve", "2": "refer"}


# -- helpers ---------------------------------------------------------------------------------


def write_module(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def callable_spec(function: str = "models:score", **extra: Any) -> ModelSpec:
    return ModelSpec(kind="callable", function=function, version="v1", **extra)


def guard(
    function: Any,
    *,
    timeout_ms: int | None = None,
    breaker: BreakerSpec | None = None,
    clock: Any = time.monotonic,
    max_concurrency: int = 16,
) -> GuardedModel:
    spec = callable_spec(timeout_ms=timeout_ms)
    model = CallableModel(function, name="test:function", version="v1")
    failure = FailureSpec(breaker=breaker or BreakerSpec(min_calls=100, window=100))
    return GuardedModel(
        model,
        spec=spec,
        failure=failure,
        outcomes=OUTCOMES,
        clock=clock,
        max_concurrency=max_concurrency,
    )


def failure_code(model: GuardedModel, input: Mapping[str, Any] | None = None) -> str:
    with pytest.raises(ModelFailure) as raised:
        model.call(input or {})
    return raised.value.code


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so models blocked in worker threads return when the test ends."""
    event = threading.Event()
    yield event
    event.set()


def training_data(labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, 3))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])  # three classes: 0, 1, 2
    return X, y if labels is None else np.asarray(labels)[y]


ROWS = [
    {"income": 1.5, "debt": 0.2, "age": -0.3},
    {"income": -1.2, "debt": -0.4, "age": 0.9},
    {"income": 0.1, "debt": 0.0, "age": 0.0},
    {"income": 0, "debt": 2, "age": 1},
]


def as_row(input: Mapping[str, Any]) -> np.ndarray:
    return np.array([[float(input[name]) for name in FEATURES]])


# -- callable --------------------------------------------------------------------------------


def test_callable_loads_a_module_next_to_the_point_file(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "models",
        """
        from warden.models import Prediction

        def score(input):
            return Prediction("approve" if input["amount"] < 100 else "refer", 0.9)

        def as_tuple(input):
            return ("deny", 0.25)

        def as_dict(input):
            return {"outcome": "refer", "confidence": 1}
        """,
    )
    for function, expected in [
        ("models:score", Prediction("approve", 0.9)),
        ("models:as_tuple", Prediction("deny", 0.25)),
        ("models:as_dict", Prediction("refer", 1.0)),
    ]:
        spec = callable_spec(function)
        model = load_model(spec, tmp_path)
        assert model is not None and model.version == "v1"
        guarded = GuardedModel(model, spec=spec, failure=FailureSpec(), outcomes=OUTCOMES)
        assert guarded.call({"amount": 10}) == expected
        assert guarded.version == "v1"


def test_two_points_each_get_their_own_models_module(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_module(tmp_path / name, "models", f"def score(input):\n    return ('{name}', 1)\n")
    first = load_model(callable_spec(), tmp_path / "a")
    second = load_model(callable_spec(), tmp_path / "b")
    assert first is not None and second is not None
    assert first.predict({}).outcome == "a"
    assert second.predict({}).outcome == "b"


def test_callable_module_can_import_its_siblings(tmp_path: Path) -> None:
    write_module(tmp_path, "thresholds_for_sibling_test", "LIMIT = 100\n")
    write_module(
        tmp_path,
        "models",
        """
        from thresholds_for_sibling_test import LIMIT

        def score(input):
            return ("approve" if input["amount"] < LIMIT else "deny", 0.8)
        """,
    )
    model = load_model(callable_spec(), tmp_path)
    assert model is not None
    assert model.predict({"amount": 500}) == Prediction("deny", 0.8)


def test_callable_accepts_numpy_scalars() -> None:
    def score(input: Mapping[str, Any]) -> tuple[Any, Any]:
        return np.str_("deny"), np.float32(0.75)

    prediction = guard(score).call({})
    assert prediction == Prediction("deny", 0.75)
    assert type(prediction.outcome) is str and type(prediction.confidence) is float


@pytest.mark.parametrize("result", [None, "approve", ("approve",), {"outcome": "approve"}, 0.9])
def test_callable_returning_anything_else_is_invalid_output(result: object) -> None:
    with pytest.raises(ModelFailure) as raised:
        guard(lambda input: result).call({})
    assert raised.value.code == "invalid_output"
    assert "test:function returned" in raised.value.message


def test_missing_module_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no module 'nowhere_to_be_found'") as raised:
        load_model(callable_spec("nowhere_to_be_found:score"), tmp_path)
    assert str(tmp_path.resolve()) in str(raised.value)


def test_missing_function_names_the_file_and_function(tmp_path: Path) -> None:
    write_module(tmp_path, "models", "def other(input):\n    return ('approve', 1)\n")
    with pytest.raises(ModelLoadError, match="has no function 'score'") as raised:
        load_model(callable_spec(), tmp_path)
    assert "models.py" in str(raised.value)


def test_function_that_is_not_callable_is_refused(tmp_path: Path) -> None:
    write_module(tmp_path, "models", "score = 42\n")
    with pytest.raises(ModelLoadError, match=r"'score' in .*models.py is int, not a function"):
        load_model(callable_spec(), tmp_path)


def test_module_that_fails_to_import_reports_the_error(tmp_path: Path) -> None:
    write_module(tmp_path, "models", "import a_dependency_that_is_missing\n")
    with pytest.raises(ModelLoadError, match=r"ModuleNotFoundError.*a_dependency_that_is_missing"):
        load_model(callable_spec(), tmp_path)
    write_module(tmp_path, "models", "def score(input):\n    return (\n")
    with pytest.raises(ModelLoadError, match="SyntaxError"):
        load_model(callable_spec(), tmp_path)


def test_proposal_has_no_model(tmp_path: Path) -> None:
    assert load_model(ModelSpec(kind="proposal"), tmp_path) is None


# -- sklearn ---------------------------------------------------------------------------------


def sklearn_spec(path: str = "model.joblib", **extra: Any) -> ModelSpec:
    return ModelSpec(kind="sklearn", path=path, features=FEATURES, version="lr-1", **extra)


def test_sklearn_maps_classes_through_labels_and_reports_max_probability(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(*training_data())
    joblib.dump(estimator, tmp_path / "model.joblib")
    spec = sklearn_spec(labels=LABELS, timeout_ms=5000)
    model = load_model(spec, tmp_path)
    assert model is not None and model.version == "lr-1"
    guarded = GuardedModel(model, spec=spec, failure=FailureSpec(), outcomes=OUTCOMES)
    seen = set()
    for input in ROWS:
        probabilities = estimator.predict_proba(as_row(input))[0]
        best = int(np.argmax(probabilities))
        prediction = guarded.call(input)
        assert prediction.outcome == LABELS[str(estimator.classes_[best])]
        assert prediction.confidence == pytest.approx(probabilities.max())
        seen.add(prediction.outcome)
    assert len(seen) >= 2


def test_sklearn_unmapped_labels_are_used_as_strings(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(*training_data(["deny", "approve", "refer"]))
    joblib.dump(estimator, tmp_path / "model.joblib")
    model = load_model(sklearn_spec(), tmp_path)
    assert model is not None
    for input in ROWS:
        assert model.predict(input).outcome == estimator.predict(as_row(input))[0]


def test_sklearn_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as raised:
        load_model(sklearn_spec("models/missing.joblib"), tmp_path)
    assert str(tmp_path / "models" / "missing.joblib") in str(raised.value)


def test_sklearn_refuses_models_without_probabilities(tmp_path: Path) -> None:
    X, y = training_data()
    joblib.dump(LinearRegression().fit(X, y), tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match="LinearRegression, which has no predict_proba"):
        load_model(sklearn_spec(), tmp_path)


def test_sklearn_refuses_a_file_joblib_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"cannot load .*model.joblib with joblib"):
        load_model(sklearn_spec(), tmp_path)


def test_sklearn_checks_feature_count_and_names(tmp_path: Path) -> None:
    X, y = training_data()
    joblib.dump(LogisticRegression().fit(X[:, :2], y), tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match=r"expects 2 features but model.features lists 3"):
        load_model(sklearn_spec(), tmp_path)

    estimator = LogisticRegression().fit(X, y)
    estimator.feature_names_in_ = np.array(["debt", "income", "age"], dtype=object)
    joblib.dump(estimator, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match="same fields in the same order"):
        load_model(sklearn_spec(), tmp_path)


def test_sklearn_trained_with_feature_names_predicts_without_warnings(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(*training_data())
    estimator.feature_names_in_ = np.array(FEATURES, dtype=object)  # as if fit on a DataFrame
    joblib.dump(estimator, tmp_path / "model.joblib")
    model = load_model(sklearn_spec(labels=LABELS), tmp_path)
    assert model is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )  # re-applied: catch_warnings just dropped the filters installed by load_model
        model.predict(ROWS[0])
    with warnings.catch_warnings(record=True) as caught:
        load_model(sklearn_spec(labels=LABELS), tmp_path)
        model.predict(ROWS[0])
    assert not caught


def test_sklearn_missing_or_bad_feature_is_a_model_error(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression().fit(*training_data()), tmp_path / "model.joblib")
    spec = sklearn_spec(labels=LABELS)
    model = load_model(spec, tmp_path)
    assert model is not None
    guarded = GuardedModel(model, spec=spec, failure=FailureSpec(), outcomes=OUTCOMES)
    with pytest.raises(ModelFailure, match="no field 'age'") as raised:
        guarded.call({"income": 1, "debt": 2})
    assert raised.value.code == "model_error"
    with pytest.raises(ModelFailure, match="'debt' is 'lots', not a number"):
        guarded.call({"income": 1, "debt": "lots", "age": 3})


# -- onnx ------------------------------------------------------------------------------------


def onnx_spec(**extra: Any) -> ModelSpec:
    return ModelSpec(kind="onnx", path="model.onnx", features=FEATURES, version="onnx-1", **extra)


def save_onnx(estimator: Any, path: Path, *, zipmap: bool) -> Any:
    from skl2onnx import to_onnx

    sample = training_data()[0][:1].astype(np.float32)
    onx = to_onnx(estimator, sample, options={id(estimator): {"zipmap": zipmap}})
    path.write_bytes(onx.SerializeToString())
    return onx


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_matches_the_sklearn_model(tmp_path: Path, zipmap: bool) -> None:
    pytest.importorskip("onnxruntime")
    estimator = LogisticRegression().fit(*training_data())
    save_onnx(estimator, tmp_path / "model.onnx", zipmap=zipmap)
    spec = onnx_spec(labels=LABELS, timeout_ms=5000)
    model = load_model(spec, tmp_path)
    assert model is not None and model.version == "onnx-1"
    guarded = GuardedModel(model, spec=spec, failure=FailureSpec(), outcomes=OUTCOMES)
    for input in ROWS:
        probabilities = estimator.predict_proba(as_row(input))[0]
        prediction = guarded.call(input)
        assert prediction.outcome == LABELS[str(estimator.classes_[np.argmax(probabilities)])]
        assert prediction.confidence == pytest.approx(probabilities.max(), abs=1e-5)
    batch = guarded.call_many(ROWS)  # one session run, the same answer row by row
    assert [(p.outcome, p.confidence) for p in batch] == [  # type: ignore[union-attr]
        (p.outcome, pytest.approx(p.confidence, abs=1e-6)) for p in map(guarded.call, ROWS)
    ]
    assert guarded.call_many([ROWS[0], {}])[1].code == "model_error"  # type: ignore[union-attr]


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_string_labels(tmp_path: Path, zipmap: bool) -> None:
    pytest.importorskip("onnxruntime")
    estimator = LogisticRegression().fit(*training_data(["deny", "approve", "refer"]))
    save_onnx(estimator, tmp_path / "model.onnx", zipmap=zipmap)
    model = load_model(onnx_spec(), tmp_path)
    assert model is not None
    for input in ROWS:
        assert model.predict(input).outcome == estimator.predict(as_row(input))[0]


def test_onnx_without_label_output_names_columns_by_labels_order(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    estimator = LogisticRegression().fit(*training_data())
    onx = save_onnx(estimator, tmp_path / "model.onnx", zipmap=False)
    label_output = next(o for o in onx.graph.output if o.name == "label")
    onx.graph.output.remove(label_output)
    (tmp_path / "model.onnx").write_bytes(onx.SerializeToString())
    model = load_model(onnx_spec(labels=LABELS), tmp_path)
    assert model is not None
    for input in ROWS:
        best = int(np.argmax(estimator.predict_proba(as_row(input))[0]))
        assert model.predict(input).outcome == LABELS[str(best)]


def test_onnx_load_errors_are_explained(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        load_model(onnx_spec(), tmp_path)
    save_onnx(LogisticRegression().fit(*training_data()), tmp_path / "model.onnx", zipmap=True)
    spec = ModelSpec(kind="onnx", path="model.onnx", features=["income"], version="1")
    with pytest.raises(ModelLoadError, match=r"expects 3 features but model.features lists 1"):
        load_model(spec, tmp_path)


def test_onnx_without_onnxruntime_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ModelLoadError, match=r"pip install 'warden-ai\[onnx\]'"):
        load_model(onnx_spec(), tmp_path)


# -- guard -----------------------------------------------------------------------------------


def test_timeout_fails_fast_while_the_model_keeps_running(release: threading.Event) -> None:
    model = guard(lambda input: release.wait(5) and ("approve", 1.0), timeout_ms=50)
    started = time.monotonic()
    with pytest.raises(ModelFailure, match="within 50 ms") as raised:
        model.call({})
    assert raised.value.code == "model_timeout"
    assert time.monotonic() - started < 1.0


def test_model_exception_is_a_model_error_with_type_and_message() -> None:
    def broken(input: Mapping[str, Any]) -> Prediction:
        raise ValueError("boom")

    for timeout_ms in (None, 1000):
        with pytest.raises(ModelFailure) as raised:
            guard(broken, timeout_ms=timeout_ms).call({})
        assert (raised.value.code, raised.value.message) == ("model_error", "ValueError: boom")


def test_results_come_back_from_workers_unchanged() -> None:
    model = guard(lambda input: (input["outcome"], input["confidence"]), timeout_ms=1000)
    for outcome, confidence in [("approve", 0.1), ("deny", 1.0), ("refer", 0.0)]:
        assert model.call({"outcome": outcome, "confidence": confidence}) == Prediction(
            outcome, confidence
        )


def test_saturated_workers_fail_fast_and_recover(release: threading.Event) -> None:
    def slow(input: Mapping[str, Any]) -> tuple[str, float]:
        if input.get("block"):
            release.wait(5)
        return ("approve", 0.5)

    model = guard(slow, timeout_ms=50, max_concurrency=2)
    assert failure_code(model, {"block": True}) == "model_timeout"
    assert failure_code(model, {"block": True}) == "model_timeout"
    assert failure_code(model, {}) == "model_saturated"  # not queued until a timeout
    release.set()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert model.call({}) == Prediction("approve", 0.5)
            break
        except ModelFailure as failure:
            assert failure.code == "model_saturated" and time.monotonic() < deadline
            time.sleep(0.01)


def test_parallel_callers_each_get_their_own_result() -> None:
    model = guard(lambda input: (OUTCOMES[input["i"] % 3], input["i"] / 1000), timeout_ms=5000)
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        try:
            for i in range(offset, offset + 200):
                assert model.call({"i": i}) == Prediction(OUTCOMES[i % 3], i / 1000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n * 200,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_breaker_opens_after_failures_and_stops_calling_the_model() -> None:
    calls: list[int] = []
    now = [0.0]

    def flaky(input: Mapping[str, Any]) -> tuple[str, float]:
        calls.append(1)
        if input["fail"]:
            raise RuntimeError("down")
        return ("approve", 0.9)

    breaker = BreakerSpec(failure_rate=0.5, window=4, min_calls=4, open_for=10, half_open_calls=1)
    model = guard(flaky, breaker=breaker, clock=lambda: now[0])
    for _ in range(4):
        assert failure_code(model, {"fail": True}) == "model_error"
    assert model.breaker.state is BreakerState.OPEN
    with pytest.raises(ModelFailure, match="breaker is open") as raised:
        model.call({"fail": False})
    assert raised.value.code == "breaker_open"
    assert len(calls) == 4
    now[0] += 10
    assert model.call({"fail": False}) == Prediction("approve", 0.9)
    assert model.breaker.state is BreakerState.CLOSED


def test_timeouts_and_invalid_outputs_count_as_breaker_failures(release: threading.Event) -> None:
    breaker = BreakerSpec(failure_rate=1.0, window=2, min_calls=2)
    model = guard(
        lambda input: release.wait(5) and ("approve", 1.0), timeout_ms=20, breaker=breaker
    )
    assert failure_code(model) == "model_timeout"
    assert failure_code(model) == "model_timeout"
    assert failure_code(model) == "breaker_open"

    model = guard(lambda input: ("maybe", 0.5), breaker=breaker)
    assert failure_code(model) == "invalid_output"
    assert failure_code(model) == "invalid_output"
    assert model.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize(
    ("outcome", "confidence", "fragment"),
    [
        ("maybe", 0.5, "outcome 'maybe' is not one of the outcomes ['approve', 'deny', 'refer']"),
        (1, 0.5, "outcome 1 has type int, not str"),
        (None, 0.5, "outcome None has type NoneType"),
        ("approve", math.nan, "confidence nan is not between 0 and 1"),
        ("approve", math.inf, "confidence inf is not between 0 and 1"),
        ("approve", 1.5, "confidence 1.5 is not between 0 and 1"),
        ("approve", -0.01, "confidence -0.01 is not between 0 and 1"),
        ("approve", "high", "confidence 'high' has type str"),
        ("approve", True, "confidence True has type bool"),
        ("approve", np.bool_(True), "has type bool"),
        ("approve", None, "confidence None has type NoneType"),
        ("approve", np.float64("nan"), "confidence nan is not between 0 and 1"),
        ("approve", 10**400, "confidence inf is not between 0 and 1"),
    ],
)
def test_invalid_outputs_are_refused(outcome: object, confidence: object, fragment: str) -> None:
    with pytest.raises(ModelFailure) as raised:
        check_prediction(outcome, confidence, OUTCOMES)
    assert raised.value.code == "invalid_output"
    assert fragment in raised.value.message


@pytest.mark.parametrize(
    ("outcome", "confidence", "expected"),
    [
        ("approve", 0.5, 0.5),
        ("approve", 0, 0.0),
        ("approve", 1, 1.0),
        (np.str_("deny"), np.float32(0.25), 0.25),
        ("refer", np.float64(0.999), 0.999),
        ("refer", np.int64(1), 1.0),
    ],
)
def test_valid_outputs_become_plain_types(
    outcome: object, confidence: object, expected: float
) -> None:
    prediction = check_prediction(outcome, confidence, OUTCOMES)
    assert prediction == Prediction(str(outcome), expected)
    assert type(prediction.outcome) is str and type(prediction.confidence) is float


def test_invalid_output_through_the_guard_names_the_outcome() -> None:
    with pytest.raises(ModelFailure, match="'maybe' is not one of the outcomes") as raised:
        guard(lambda input: ("maybe", 0.5)).call({})
    assert raised.value.code == "invalid_output"


def test_model_failure_carries_code_and_message() -> None:
    failure = ModelFailure("model_timeout", "too slow")
    assert (failure.code, failure.message) == ("model_timeout", "too slow")
    assert "model_timeout" in str(failure)


def test_a_model_that_breaks_the_protocol_is_invalid_output() -> None:
    class Raw:
        version = "raw-1"

        def predict(self, input: Mapping[str, Any]) -> Any:
            return "approve"

    model = GuardedModel(Raw(), spec=callable_spec(), failure=FailureSpec(), outcomes=OUTCOMES)
    assert failure_code(model) == "invalid_output"
    assert model.version == "raw-1"


def test_idle_workers_exit_and_the_pool_starts_new_ones() -> None:
    pool = WorkerPool(2, name="test-idle-pool", idle_seconds=0.05)

    def pool_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("test-idle-pool")]

    assert pool.run(lambda x: x + 1, 1, timeout=5) == 2
    assert len(pool_threads()) == 1
    deadline = time.monotonic() + 5
    while pool_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool_threads() == []
    assert pool.run(lambda x: x * 3, 2, timeout=5) == 6
