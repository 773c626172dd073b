"""Turns a decision point's `model:` section into a callable model."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from warden.models.base import Model, ModelLoadError
from warden.policy.schema import ModelKind, ModelSpec

__all__ = ["ModelLoadError", "ModelSource", "load_model", "source_of"]


@dataclass(frozen=True)
class ModelSource:
    """What a model was loaded from: enough for another process to load the very same one."""

    spec: ModelSpec
    base_dir: Path


_sources: weakref.WeakKeyDictionary[Model, ModelSource] = weakref.WeakKeyDictionary()


def source_of(model: Model) -> ModelSource | None:
    """Where `load_model` loaded `model` from; None for a model built some other way."""
    return _sources.get(model)


def load_model(spec: ModelSpec, base_dir: Path) -> Model | None:
    """The model for `spec`, or None for kind 'proposal', where the caller submits the output
    and confidence itself. `base_dir` is the folder of the decision point file.
    """
    model = _load(spec, base_dir)
    if model is not None:
        _sources[model] = ModelSource(spec, base_dir.resolve())
    return model


def _load(spec: ModelSpec, base_dir: Path) -> Model | None:
    if spec.kind is ModelKind.PROPOSAL:
        return None
    if spec.kind is ModelKind.CALLABLE:
        from warden.models.callable import load_callable

        return load_callable(spec, base_dir)
    if spec.kind is ModelKind.REMOTE:
        from warden.models.remote import load_remote

        return load_remote(spec)
    path = _artifact(spec, base_dir)
    if spec.kind is ModelKind.SKLEARN:
        from warden.models.sklearn import load_sklearn

        return load_sklearn(spec, path)
    if spec.kind is ModelKind.MLFLOW:
        from warden.models.mlflow import load_mlflow

        return load_mlflow(spec, path)
    from warden.models.onnx import load_onnx

    return load_onnx(spec, path)


def _artifact(spec: ModelSpec, base_dir: Path) -> Path:
    assert spec.path is not None  # the schema requires it for sklearn, onnx and mlflow
    path = Path(spec.path).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if spec.kind is ModelKind.MLFLOW:
        if not (path / "MLmodel").is_file():
            raise ModelLoadError(
                f"{path} is not an MLflow model folder: it has no MLmodel file (model.path "
                f"'{spec.path}' is relative to {base_dir}); point model.path at the folder "
                "mlflow's save_model wrote"
            )
        return path
    if not path.is_file():
        raise ModelLoadError(
            f"model file {path} does not exist (model.path '{spec.path}' is relative to "
            f"{base_dir}); save the {spec.kind} model there or fix model.path"
        )
    return path
