"""Models behind one small protocol, guarded by a circuit breaker, a timeout and output checks."""

from warden.models.base import Model, ModelFailure, ModelLoadError, Prediction
from warden.models.breaker import BreakerState, CircuitBreaker
from warden.models.guard import GuardedModel, check_prediction
from warden.models.loader import load_model

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "GuardedModel",
    "Model",
    "ModelFailure",
    "ModelLoadError",
    "Prediction",
    "check_prediction",
    "load_model",
]
