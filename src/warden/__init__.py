"""Warden: a governed runtime for AI decisions in production."""

from typing import TYPE_CHECKING, Any

from warden.decision import Decision, Reason, Route, Status
from warden.errors import WardenError

if TYPE_CHECKING:
    from warden.sdk.local import Warden

__all__ = ["Decision", "Reason", "Route", "Status", "Warden", "WardenError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`Warden` (the SDK, which loads the whole engine) is imported when first asked for, so a
    process that needs one module — the verifier's state-check processes — starts quickly."""
    if name == "Warden":
        from warden.sdk.local import Warden

        return Warden
    raise AttributeError(f"module 'warden' has no attribute {name!r}")
