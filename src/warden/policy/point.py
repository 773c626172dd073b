"""A loaded, compiled decision point: everything the engine needs, ready for the hot path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from warden.policy.rules import Binder, CompiledRule, binder_for
from warden.policy.schema import DecisionPointSpec


@dataclass(frozen=True)
class CompiledPoint:
    spec: DecisionPointSpec
    version: str
    source: Path
    validate_input: Callable[[Any], Any]
    rules: tuple[CompiledRule, ...]
    four_eyes: CompiledRule | None = None
    model_line: int | None = None  # where the file names the model, for load errors

    @cached_property
    def binder(self) -> Binder:
        """Binds the variables (and input fields) this point's routing rules read."""
        return binder_for(self.rules)

    @property
    def name(self) -> str:
        return self.spec.point

    @property
    def base_dir(self) -> Path:
        return self.source.parent
