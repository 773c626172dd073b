"""A plain Python function as the model: `module:function`, usually a `models.py` next to the
decision point file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from warden.models.base import INVALID_OUTPUT, ModelFailure, ModelLoadError, Prediction, describe
from warden.policy.schema import ModelSpec


class CallableModel:
    """Calls `function(input)`, which returns a Prediction, an `(outcome, confidence)` tuple or a
    dict with `outcome` and `confidence`.
    """

    def __init__(
        self, function: Callable[[Mapping[str, Any]], object], *, name: str, version: str | None
    ) -> None:
        self.version = version
        self._function = function
        self._name = name

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        result = self._function(input)
        if isinstance(result, Prediction):
            return result
        if isinstance(result, tuple) and len(result) == 2:
            return Prediction(result[0], result[1])
        if isinstance(result, Mapping) and "outcome" in result and "confidence" in result:
            return Prediction(result["outcome"], result["confidence"])
        raise ModelFailure(
            INVALID_OUTPUT,
            f"{self._name} returned {describe(result)}; return a Prediction, an "
            "(outcome, confidence) tuple or a dict with 'outcome' and 'confidence'",
        )


def load_callable(spec: ModelSpec, base_dir: Path) -> CallableModel:
    assert spec.function is not None  # the schema requires it for kind=callable
    module_name, _, function_name = (part.strip() for part in spec.function.partition(":"))
    module = _import(module_name, spec.function, base_dir)
    function = getattr(module, function_name, None)
    where = getattr(module, "__file__", None) or module_name
    if function is None:
        raise ModelLoadError(
            f"model.function '{spec.function}': {where} has no function '{function_name}'; "
            "define it there or fix the name after the ':'"
        )
    if not callable(function):
        raise ModelLoadError(
            f"model.function '{spec.function}': '{function_name}' in {where} is "
            f"{type(function).__name__}, not a function taking the input dict"
        )
    return CallableModel(function, name=spec.function, version=spec.version)


def _import(module_name: str, reference: str, base_dir: Path) -> ModuleType:
    """Imports the module, preferring a file next to the point file.

    A `<name>.py` in `base_dir` is loaded from that file under a name private to the folder, so
    two decision points can each have their own `models.py`. `base_dir` also goes on `sys.path`,
    so that module can import its siblings and dotted names resolve from the folder.
    """
    base_dir = base_dir.resolve()
    if str(base_dir) not in sys.path:
        sys.path.append(str(base_dir))  # appended: a point's files must not shadow installed ones
    local = base_dir / f"{module_name}.py"
    try:
        if local.is_file():
            return _load_file(module_name, local, base_dir)
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise _import_failed(reference, module_name, exc) from exc
        raise ModelLoadError(
            f"model.function '{reference}': there is no module '{module_name}'; put "
            f"{module_name.replace('.', '/')}.py next to the decision point file in {base_dir} "
            "or install the package that provides it"
        ) from exc
    except Exception as exc:
        raise _import_failed(reference, module_name, exc) from exc


def _import_failed(reference: str, module_name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"model.function '{reference}': importing '{module_name}' failed with "
        f"{type(exc).__name__}: {exc}; fix the module or install what it needs"
    )


def _load_file(module_name: str, file: Path, base_dir: Path) -> ModuleType:
    folder = hashlib.sha256(str(base_dir).encode()).hexdigest()[:12]
    private_name = f"_warden_point_{folder}_{module_name}"
    spec = importlib.util.spec_from_file_location(private_name, file)
    assert spec is not None and spec.loader is not None  # always set for a .py file
    module = importlib.util.module_from_spec(spec)
    sys.modules[private_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[private_name]
        raise
    return module
