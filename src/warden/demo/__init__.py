"""`warden demo`: a credit decision point, its model, its server and traffic, in one command."""

from warden.demo.run import DemoSummary, run_demo
from warden.demo.server import DemoError

__all__ = ["DemoError", "DemoSummary", "run_demo"]
