"""Warden: a governed runtime for AI decisions in production."""

from warden.decision import Decision, Reason, Route, Status
from warden.errors import WardenError
from warden.sdk.local import Warden

__all__ = ["Decision", "Reason", "Route", "Status", "Warden", "WardenError"]
__version__ = "0.1.0"
