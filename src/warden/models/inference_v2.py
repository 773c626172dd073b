"""A classifier served over the Open Inference Protocol v2 REST API (KServe, Triton, MLServer).

Inputs go out as one tensor of shape [N, len(model.features)]; the answer's probability tensor
has one column per class, named in order by `model.remote.classes`, and the most probable class
is the outcome. A single column is read as the probability of the second of two classes (a
sigmoid output). Concurrent and batched decisions share one request: `predict_many` sends N rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from warden.models.base import ModelFailure, Prediction
from warden.models.features import feature_row
from warden.models.http import RemoteClient, malformed
from warden.policy.schema import ModelSpec


class InferenceV2Model:
    def __init__(self, spec: ModelSpec, client: RemoteClient) -> None:
        remote = spec.remote
        assert remote is not None and remote.classes and spec.features  # the schema requires them
        self.version = spec.version
        self._client = client
        self._features = spec.features
        labels = spec.labels or {}
        self._outcomes = [labels.get(c, c) for c in remote.classes]
        self._input = remote.input
        self._datatype = remote.datatype
        self._output = remote.output
        path = f"/v2/models/{quote(remote.model, safe='')}"
        if remote.model_version:
            path += f"/versions/{quote(remote.model_version, safe='')}"
        self._path = path + "/infer"
        self._where = f"{client.url}{self._path}"

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        answer = self.predict_many([input])[0]
        if isinstance(answer, ModelFailure):
            raise answer
        return answer

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction | ModelFailure]:
        """One request for every row that has its features; a row without them fails alone, and
        a failed request fails every row it carried (without a retry per row)."""
        rows: list[list[float]] = []
        answers: list[Prediction | ModelFailure | None] = []
        for item in inputs:
            try:
                rows.append([float(v) for v in feature_row(item, self._features, np.float64)[0]])
                answers.append(None)
            except ModelFailure as failure:
                answers.append(failure)
        if rows:
            try:
                predictions: list[Prediction | ModelFailure] = list(self._infer(rows))
            except ModelFailure as failure:
                predictions = [failure] * len(rows)
            it = iter(predictions)
            answers = [next(it) if a is None else a for a in answers]
        return [a for a in answers if a is not None]

    def _infer(self, rows: list[list[float]]) -> list[Prediction]:
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": self._input,
                    "shape": [len(rows), len(self._features)],
                    "datatype": self._datatype,
                    "data": [value for row in rows for value in row],
                }
            ]
        }
        if self._output is not None:
            body["outputs"] = [{"name": self._output}]
        return self._decode(self._client.post(self._path, body), len(rows))

    def _decode(self, answer: Any, n: int) -> list[Prediction]:
        tensor = self._tensor(answer)
        shape, data = tensor.get("shape"), tensor.get("data")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise malformed(self._where, f"output shape {shape!r} is not a list of sizes", answer)
        try:
            values = np.asarray(data, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise malformed(self._where, "output data is not a list of numbers", answer) from None
        size = math.prod(shape)
        if values.size != size or not shape or shape[0] != n:
            raise malformed(
                self._where,
                f"output of shape {shape} with {values.size} values does not hold {n} rows",
                answer,
            )
        width = size // n if n else 0
        probabilities = values.reshape(n, width)
        if width == 1 and len(self._outcomes) == 2:  # P(second class), as a sigmoid gives it
            probabilities = np.hstack([1.0 - probabilities, probabilities])
        elif width != len(self._outcomes):
            raise malformed(
                self._where,
                f"output has {width} columns per row but model.remote.classes lists "
                f"{len(self._outcomes)}",
                answer,
            )
        best = probabilities.argmax(axis=1)
        return [
            Prediction(self._outcomes[int(i)], float(row[i]))
            for i, row in zip(best, probabilities, strict=True)
        ]

    def _tensor(self, answer: Any) -> dict[str, Any]:
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise malformed(self._where, "the answer has no outputs", answer)
        if self._output is None:
            tensor = outputs[0]
        else:
            tensor = next(
                (o for o in outputs if isinstance(o, dict) and o.get("name") == self._output),
                None,
            )
            if tensor is None:
                names = [o.get("name") for o in outputs if isinstance(o, dict)]
                raise malformed(
                    self._where,
                    f"no output named '{self._output}' (outputs {names}); fix model.remote.output",
                    answer,
                )
        if not isinstance(tensor, dict):
            raise malformed(self._where, "an output is not an object", answer)
        return tensor
