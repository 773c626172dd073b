"""The gateway file: upstream servers, which decision point governs which tool, how agents wait,
limits. Loaded once at start; a bad file is refused with the file, the field and how to fix it."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from warden.errors import PolicyError
from warden.policy.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Upstream(_Strict):
    """One upstream MCP server: a command the gateway launches (stdio) or a URL (HTTP)."""

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> Upstream:
        if (self.command is None) == (self.url is None):
            raise ValueError("give an upstream either `command` (stdio) or `url` (HTTP), not both")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class ToolRule(_Strict):
    """Which decision point governs the tools of a server that match `tool` (a glob)."""

    server: str = Field(pattern=_NAME)
    tool: str = Field(default="*", min_length=1)
    point: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    hide_refused: bool = Field(
        default=False,
        description="Leave out of tools/list what the point refuses whatever the arguments.",
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Argument paths (e.g. card.number) kept out of the ledger, as a keyed digest.",
    )

    @model_validator(mode="after")
    def _check_paths(self) -> ToolRule:
        for path in self.secrets:
            if not _PATH.match(path):
                raise ValueError(
                    f"secrets: '{path}' is not an argument path; write field names joined by dots, "
                    "e.g. card.number"
                )
        return self

    def matches(self, server: str, tool: str) -> bool:
        return server == self.server and fnmatch.fnmatchcase(tool, self.tool)


class Wait(_Strict):
    """What the agent sees while a call waits for a person.

    `hold`: the call stays open, with progress notifications, up to `timeout`; then (or at once
    with `pending`) the agent gets a pending result with the decision id to ask again with."""

    mode: Literal["hold", "pending"] = "hold"
    timeout: Seconds = 30.0
    progress_every: Seconds = 2.0
    poll: Seconds = 0.25


class Limit(_Strict):
    """At most `max` calls of `tool` (a glob) per principal in `per`; beyond: `exceed`."""

    tool: str = Field(default="*", min_length=1)
    server: str = Field(default="*", min_length=1)
    max: int = Field(ge=0)
    per: Seconds
    exceed: Literal["review", "refused"] = "review"

    @model_validator(mode="after")
    def _positive_window(self) -> Limit:
        if self.per <= 0:
            raise ValueError("per must be a positive duration, e.g. 1h")
        return self


class Loop(_Strict):
    """The same call (tool and arguments) `repeats` times within `within` is a loop."""

    repeats: int = Field(default=5, ge=2)
    within: Seconds = 60.0
    exceed: Literal["review", "refused"] = "refused"


class KillAction(_Strict):
    """What an engaged agent or server kill switch does to a call."""

    action: Literal["refused", "review"] = "refused"


class GatewayConfig(_Strict):
    gateway: str = Field(default="warden", pattern=_NAME)
    agent: str = Field(
        default="agent",
        pattern=_NAME,
        description="The agent's name when the client brings no token (stdio).",
    )
    points: str | None = Field(
        default=None, description="Folder of decision point files, relative to this file."
    )
    upstreams: dict[str, Upstream] = Field(min_length=1)
    tools: list[ToolRule] = Field(min_length=1)
    wait: Wait = Field(default_factory=Wait)
    approval_ttl: Seconds = Field(
        default=900.0, description="How long an approval may wait for its execution."
    )
    limits: list[Limit] = Field(default_factory=list)
    loop: Loop | None = Field(default_factory=Loop)
    kill: KillAction = Field(default_factory=KillAction)
    source: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        for name in self.upstreams:
            if not re.match(_NAME, name):
                raise ValueError(
                    f"upstreams: '{name}' is not a server name; use lower-case letters, digits, "
                    "'_' and '-', starting with a letter"
                )
        for index, rule in enumerate(self.tools):
            if rule.server not in self.upstreams:
                raise ValueError(
                    f"tools.{index}.server is '{rule.server}', which is not one of the upstreams "
                    f"{sorted(self.upstreams)}"
                )
        if self.approval_ttl <= 0:
            raise ValueError("approval_ttl must be a positive duration, e.g. 15m")
        return self

    def rule_for(self, server: str, tool: str) -> ToolRule | None:
        """The first rule that matches; None means no point governs the tool (it is refused)."""
        return next((r for r in self.tools if r.matches(server, tool)), None)

    def points_folder(self) -> Path | None:
        if self.points is None:
            return None
        return (Path(self.source).parent / self.points) if self.source else Path(self.points)


def load_gateway(path: Path) -> GatewayConfig:
    """Parse and validate a gateway file. Raises PolicyError naming the file, line and reason."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the gateway file: {exc.strerror}", file=file) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(f"not valid YAML: {problem}", file=file, line=line) from exc
    if not isinstance(data, dict):
        raise PolicyError(
            "a gateway file must be a YAML mapping (upstreams:, tools:, ...)", file=file, line=1
        )
    try:
        return GatewayConfig.model_validate({**data, "source": file})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc)
        if error["type"] == "extra_forbidden":
            message = f"unknown field '{where}'; check the spelling or remove it"
        elif error["type"] == "missing":
            message = f"'{where}' is required"
        else:
            text_ = error["msg"].removeprefix("Value error, ")
            message = f"{where}: {text_}" if loc else text_
        raise PolicyError(message, file=file, line=_line(root, loc)) from exc


def _line(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest node of `loc` that exists in the YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == part), None)
            if found is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = found
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line
