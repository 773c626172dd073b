"""An ONNX classifier (for example converted with skl2onnx), run with onnxruntime on the CPU.

Which class is the outcome, by output format:

- ZipMap probabilities (a list of `{label: probability}`; skl2onnx's default): the label with the
  highest probability. The map carries the labels, so nothing has to be guessed.
- Plain probability tensor (skl2onnx `zipmap=False`): the model's own label output, with the
  highest probability as confidence. The label output is computed inside the model from its own
  class list, so it cannot drift from the tensor's column order. Only when the model has no label
  output are columns named by `model.labels` keys in order (list every class, in the model's
  class order), or else by column index ("0", "1", ...).

Labels become outcomes through `model.labels` (keys are `str(label)`), or `str(label)` itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from warden.models.base import ModelLoadError, Prediction
from warden.models.features import feature_matrix, feature_row
from warden.policy.schema import ModelSpec

_INPUT_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
_LABEL_TYPES = ("tensor(int64)", "tensor(string)")
_TENSOR_PROBABILITY_TYPES = ("tensor(float)", "tensor(double)")


class OnnxModel:
    def __init__(self, session: Any, *, spec: ModelSpec, path: Path) -> None:
        assert spec.features is not None  # the schema requires it for kind=onnx
        self.version = spec.version
        self._session = session
        self._features = spec.features
        self._labels = spec.labels or {}
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in _INPUT_DTYPES:
            found = [f"{i.name}: {i.type}" for i in inputs]
            raise ModelLoadError(
                f"{path} takes inputs {found}; Warden feeds one float tensor of shape "
                f"[N, {len(spec.features)}] (convert with a single FloatTensorType input)"
            )
        width = inputs[0].shape[-1] if inputs[0].shape else None
        if isinstance(width, int) and width != len(spec.features):
            raise ModelLoadError(
                f"{path} expects {width} features but model.features lists "
                f"{len(spec.features)}: {spec.features}"
            )
        self._input = inputs[0].name
        self._dtype = _INPUT_DTYPES[inputs[0].type]

        outputs = session.get_outputs()
        label = next((o for o in outputs if o.type in _LABEL_TYPES), None)
        zipmap = next((o for o in outputs if o.type.startswith("seq(map(")), None)
        tensor = next((o for o in outputs if o.type in _TENSOR_PROBABILITY_TYPES), None)
        self._zipmap = zipmap is not None
        self._columns: list[str] = []
        if zipmap is not None:
            self._outputs = [zipmap.name]
        elif tensor is not None and label is not None:
            self._outputs = [tensor.name, label.name]
        elif tensor is not None:
            self._outputs = [tensor.name]
            self._columns = list(self._labels)
        else:
            found = [f"{o.name}: {o.type}" for o in outputs]
            raise ModelLoadError(
                f"{path} gives no class probabilities (outputs {found}); kind 'onnx' needs a "
                "classifier, for example converted from scikit-learn with skl2onnx"
            )

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        return self._decode(self._run(feature_row(input, self._features, self._dtype)), 0)

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One session run over the whole batch: concurrent decisions share it."""
        results = self._run(feature_matrix(inputs, self._features, self._dtype))
        return [self._decode(results, row) for row in range(len(inputs))]

    def _run(self, matrix: Any) -> list[Any]:
        results: list[Any] = self._session.run(self._outputs, {self._input: matrix})
        return results

    def _decode(self, results: list[Any], row: int) -> Prediction:
        """The outcome and confidence of one row of a session run's outputs."""
        if self._zipmap:
            probabilities: dict[Any, float] = results[0][row]
            label = max(probabilities, key=probabilities.__getitem__)
            return Prediction(self._outcome(label), float(probabilities[label]))
        scores = results[0][row]
        best = int(scores.argmax())
        if len(results) > 1:
            label = results[1][row]
        elif best < len(self._columns):
            label = self._columns[best]
        else:
            label = best
        return Prediction(self._outcome(label), float(scores[best]))

    def _outcome(self, label: object) -> str:
        key = str(label)
        return self._labels.get(key, key)


def load_onnx(spec: ModelSpec, path: Path) -> OnnxModel:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(
            f"model kind 'onnx' needs onnxruntime, which is not installed ({exc}); "
            "run: pip install 'warden-ai[onnx]'"
        ) from exc
    options = onnxruntime.SessionOptions()
    # Small batches: parallelism comes from concurrent requests, not from splitting one small
    # inference over a thread pool that would spin and contend with the other requests.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelLoadError(
            f"onnxruntime cannot load {path} ({type(exc).__name__}: {exc}); check that the file "
            "is an ONNX model and was exported with an opset this onnxruntime supports"
        ) from exc
    return OnnxModel(session, spec=spec, path=path)
