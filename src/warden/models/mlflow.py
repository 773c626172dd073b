"""An MLflow model folder (the one with the `MLmodel` file), loaded with `mlflow.pyfunc`.

The model gets a pandas DataFrame with one column per `model.features` entry, in that order.
With a column signature, each column has the type the signature declares (MLflow refuses an
int64 column for a `double` input); without one, every column is float64.

Which class is the outcome, by what the model is:

- scikit-learn flavour: the estimator's own `predict_proba` and `classes_`, because its pyfunc
  `predict` gives the label without a confidence. The estimator must be a classifier with
  probabilities.
- anything else: pyfunc `predict`, which must return a DataFrame, a dict of columns or a list of
  row dicts with either
  - `outcome` and `confidence` columns, or
  - one probability column per class, named by its label: the highest is the outcome.

Labels (and values of an `outcome` column) become outcomes through `model.labels` (keys are
`str(label)`); a probability column's label is otherwise `str(label)` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from warden.models.base import (
    INVALID_OUTPUT,
    MODEL_ERROR,
    ModelFailure,
    ModelLoadError,
    Prediction,
    describe,
)
from warden.models.sklearn import check_features
from warden.policy.schema import ModelSpec

INSTALL_HINT = "kind mlflow needs the optional extra: pip install 'warden-ai[mlflow]'"
SHAPES = (
    "return a DataFrame (or a dict of columns, or a list of row dicts) with 'outcome' and "
    "'confidence' columns, or with one probability column per class"
)

# How to turn one input value into a column entry, the column's dtype, and what it wants.
Column = tuple[Callable[[Any], Any], Any, str]


class MlflowModel:
    def __init__(self, pyfunc: Any, *, spec: ModelSpec, path: Path) -> None:
        import pandas

        assert spec.features is not None  # the schema requires it for kind=mlflow
        self.version = spec.version
        self._frame_type = pandas.DataFrame
        self._features = spec.features
        self._labels = spec.labels or {}
        self._path = path
        self._columns = _columns(pyfunc.metadata.get_input_schema(), spec.features, path)
        estimator = _sklearn_estimator(pyfunc, spec.features, path)
        if estimator is None:
            self._answer = self._from_predict
            self._predict = pyfunc.predict
        else:
            self._answer = self._from_probabilities
            self._predict = estimator.predict_proba
            self._classes = [self._outcome(label) for label in estimator.classes_]

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        return self._answer(self._frame([input]), 1)[0]

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One model call for the whole batch."""
        return self._answer(self._frame(inputs), len(inputs))

    def _frame(self, inputs: Sequence[Mapping[str, Any]]) -> Any:
        data = {}
        for name, (convert, dtype, wanted) in zip(self._features, self._columns, strict=True):
            values = []
            for input in inputs:
                if name not in input:
                    raise ModelFailure(
                        MODEL_ERROR, f"input has no field '{name}', which model.features lists"
                    )
                try:
                    values.append(convert(input[name]))
                except (TypeError, ValueError):
                    raise ModelFailure(
                        MODEL_ERROR,
                        f"input field '{name}' is {describe(input[name])}, not {wanted}",
                    ) from None
            data[name] = np.array(values, dtype=dtype)
        return self._frame_type(data)

    def _from_probabilities(self, frame: Any, rows: int) -> list[Prediction]:
        probabilities = self._predict(frame)
        best = probabilities.argmax(axis=1)
        return [
            Prediction(self._classes[i], float(p[i]))
            for i, p in zip(best, probabilities, strict=True)
        ]

    def _from_predict(self, frame: Any, rows: int) -> list[Prediction]:
        result = self._predict(frame)
        table = self._table(result)
        if len(table) != rows:
            raise ModelFailure(
                INVALID_OUTPUT, f"MLflow model {self._path} returned {len(table)} rows for {rows}"
            )
        if "outcome" in table.columns and "confidence" in table.columns:
            return [
                Prediction(self._labels.get(str(outcome), outcome), confidence)
                for outcome, confidence in zip(
                    table["outcome"].tolist(), table["confidence"].tolist(), strict=True
                )
            ]
        try:
            probabilities = table.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise ModelFailure(
                INVALID_OUTPUT,
                f"MLflow model {self._path} returned columns {list(map(str, table.columns))}, "
                f"not all probabilities; {SHAPES}",
            ) from None
        outcomes = [self._outcome(label) for label in table.columns]
        best = probabilities.argmax(axis=1)
        return [
            Prediction(outcomes[i], float(p[i])) for i, p in zip(best, probabilities, strict=True)
        ]

    def _table(self, result: object) -> Any:
        """The result as a DataFrame, when it is one of the accepted shapes."""
        table = None
        try:
            if isinstance(result, self._frame_type):
                table = result
            elif isinstance(result, Mapping) and result:
                columns = dict(result)
                scalars = all(
                    isinstance(v, str) or not hasattr(v, "__len__") for v in columns.values()
                )
                table = self._frame_type([columns] if scalars else columns)
            elif (
                isinstance(result, list) and result and all(isinstance(r, Mapping) for r in result)
            ):
                table = self._frame_type(result)
        except ValueError:  # columns of different lengths
            pass
        if table is None or len(table.columns) == 0:
            raise ModelFailure(
                INVALID_OUTPUT, f"MLflow model {self._path} returned {describe(result)}; {SHAPES}"
            )
        return table

    def _outcome(self, label: object) -> str:
        key = str(label)
        return self._labels.get(key, key)


def load_mlflow(spec: ModelSpec, path: Path) -> MlflowModel:
    try:
        import mlflow.pyfunc
        import pandas  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"{INSTALL_HINT} ({exc})") from exc
    try:
        pyfunc = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"MLflow cannot load {path} ({type(exc).__name__}: {exc}); install the packages "
            "its requirements.txt lists, in the versions it was saved with"
        ) from exc
    return MlflowModel(pyfunc, spec=spec, path=path)


def _sklearn_estimator(pyfunc: Any, features: list[str], path: Path) -> Any:
    """The fitted classifier inside a scikit-learn flavour model; None for other flavours."""
    if "sklearn" not in pyfunc.metadata.flavors:
        return None
    estimator = pyfunc.get_raw_model()
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelLoadError(
            f"{path} holds a scikit-learn {type(estimator).__name__}, which has no "
            "predict_proba; kind 'mlflow' needs a classifier that gives probabilities"
        )
    if getattr(estimator, "classes_", None) is None:
        raise ModelLoadError(
            f"{path} holds a {type(estimator).__name__} without classes_; save it after fit()"
        )
    check_features(estimator, features, path)
    return estimator


def _columns(schema: Any, features: list[str], path: Path) -> list[Column]:
    """How to build each feature column: typed by the signature's columns, else float64."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return [_NUMBER] * len(features)
    declared = {spec.name: spec.type for spec in schema.inputs}
    missing = [name for name in schema.required_input_names() if name not in features]
    unknown = [name for name in features if name not in declared]
    if missing or unknown:
        raise ModelLoadError(
            f"{path} has a signature with inputs {list(declared)} but model.features is "
            f"{features}; list the signature's inputs"
        )
    return [_TYPED.get(getattr(declared[name], "name", ""), _AS_GIVEN) for name in features]


def _integer(value: Any) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(value)


def _instance(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(value)
        return value

    return check


_NUMBER: Column = (float, np.float64, "a number")
_AS_GIVEN: Column = (lambda value: value, None, "")
_TYPED: dict[str, Column] = {
    "double": _NUMBER,
    "float": (float, np.float32, "a number"),
    "long": (_integer, np.int64, "an integer"),
    "integer": (_integer, np.int32, "an integer"),
    "boolean": (_instance(bool), np.bool_, "true or false"),
    "string": (_instance(str), object, "a string"),
}
