"""A loaded, compiled decision point: everything the engine needs, ready for the hot path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warden.policy.rules import CompiledRule
from warden.policy.schema import DecisionPointSpec


@dataclass(frozen=True)
class CompiledPoint:
    spec: DecisionPointSpec
    version: str
    source: Path
    validate_input: Callable[[Any], Any]
    rules: tuple[CompiledRule, ...]
    four_eyes: CompiledRule | None = None

    @property
    def name(self) -> str:
        return self.spec.point

    @property
    def base_dir(self) -> Path:
        return self.source.parent
