"""The schema of a decision point file. Unknown fields are refused so typos never pass silently."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from warden.policy.durations import parse_duration
from warden.policy.monitoring import MonitoringSpec

Seconds = Annotated[float, BeforeValidator(parse_duration)]
REVIEW = "review"
_NAME = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelKind(StrEnum):
    CALLABLE = "callable"
    SKLEARN = "sklearn"
    ONNX = "onnx"
    MLFLOW = "mlflow"
    REMOTE = "remote"
    PROPOSAL = "proposal"


KIND_ALIASES = {"http": ModelKind.REMOTE.value}  # the name the design notes use


class RemoteProtocol(StrEnum):
    V2 = "v2"  # Open Inference Protocol v2 REST (KServe, Triton, MLServer)
    OPENAI = "openai"  # OpenAI-compatible chat completions (vLLM, llama.cpp, OpenAI, ...)


_V2_ONLY = ("model_version", "input", "output")
_OPENAI_ONLY = ("system", "prompt", "confidence_field")


class RemoteSpec(_Strict):
    """A model served elsewhere, called over HTTP for every decision."""

    protocol: RemoteProtocol
    url: str = Field(
        description="Base URL: the server root for v2 (http://host:8080), the API root for "
        "openai (http://host:8000/v1)."
    )
    model: str = Field(min_length=1, description="The model's name on the server.")
    model_version: str | None = Field(default=None, description="v2: a version on the server.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with every call; `${NAME}` is replaced by environment variable NAME.",
    )
    classes: list[str] | None = Field(
        default=None,
        description="v2: the class of each probability column, in order. openai: the answers "
        "the reply is constrained to (default: the point's outcomes). `model.labels` maps "
        "them to outcomes where they differ.",
    )
    input: str = Field(default="input-0", min_length=1, description="v2: input tensor name.")
    datatype: str = Field(default="FP64", pattern=r"^FP(32|64)$", description="v2: FP64 or FP32.")
    output: str | None = Field(
        default=None,
        description="v2: the output tensor of class probabilities (MLServer's scikit-learn "
        "runtime: predict_proba); default the first output.",
    )
    system: str | None = Field(default=None, description="openai: the system message.")
    prompt: str | None = Field(
        default=None,
        description="openai: the user message; {{input}} becomes the input as JSON and "
        "{{input.NAME}} one field.",
    )
    confidence_field: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai: a reply field holding the confidence, used where the server "
        "returns no logprobs.",
    )
    request: dict[str, Any] = Field(
        default_factory=dict,
        description="openai: extra fields merged into each request body (max_tokens, ...).",
    )
    max_connections: int = Field(default=16, ge=1, le=1024)

    @model_validator(mode="after")
    def _check_protocol_fields(self) -> RemoteSpec:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"model.remote.url '{self.url}' must be an http:// or https:// URL")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("model.remote.classes must be unique")
        if self.protocol is RemoteProtocol.V2:
            if not self.classes:
                raise ValueError(
                    "model.remote.classes is required for protocol v2: list the class of each "
                    "probability column, in the model's order (scikit-learn: model.classes_)"
                )
            wrong = [name for name in _OPENAI_ONLY if getattr(self, name) is not None]
            wrong += ["request"] if self.request else []
        else:
            wrong = [name for name in _V2_ONLY if name in self.model_fields_set]
            wrong += ["datatype"] if "datatype" in self.model_fields_set else []
        if wrong:
            raise ValueError(
                f"model.remote.{wrong[0]} does not apply to protocol '{self.protocol}'; remove it"
            )
        return self


class ModelSpec(_Strict):
    """Which model proposes outcomes, and how to call it."""

    kind: ModelKind
    version: str | None = Field(
        default=None, description="Model version recorded with every decision."
    )
    path: str | None = Field(
        default=None,
        description="Artifact, relative to the point file: a file, or an MLflow model folder.",
    )
    function: str | None = Field(default=None, description="`module:function` for kind=callable.")
    features: list[str] | None = Field(
        default=None,
        description="Input fields, in the order the model expects (sklearn, onnx, mlflow).",
    )
    labels: dict[str, str] | None = Field(
        default=None, description="Model class label -> outcome, where they differ."
    )
    timeout_ms: int | None = Field(default=None, gt=0, le=600_000)
    remote: RemoteSpec | None = Field(
        default=None, description="Where and how to call the model, for kind=remote."
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _alias_kind(cls, kind: object) -> object:
        return KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else kind

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ModelSpec:
        needs_path = self.kind in (ModelKind.SKLEARN, ModelKind.ONNX, ModelKind.MLFLOW)
        if needs_path and not self.path:
            raise ValueError(f"model.path is required for kind '{self.kind}'")
        if needs_path and not self.features:
            raise ValueError(
                f"model.features is required for kind '{self.kind}': list the input fields "
                "in the order the model was trained on"
            )
        if self.kind is ModelKind.CALLABLE and (not self.function or ":" not in self.function):
            raise ValueError("model.function is required for kind 'callable', as 'module:function'")
        if (self.kind is ModelKind.REMOTE) != (self.remote is not None):
            raise ValueError(
                "model.remote is required for kind 'remote' (protocol, url and model), "
                "and only for it"
                if self.kind is ModelKind.REMOTE
                else f"model.remote does not apply to kind '{self.kind}'; remove it"
            )
        if (
            self.remote is not None
            and self.remote.protocol is RemoteProtocol.V2
            and not self.features
        ):
            raise ValueError(
                "model.features is required for protocol v2: list the input fields in the "
                "order of the model's input columns"
            )
        if self.kind is not ModelKind.PROPOSAL and not self.version:
            raise ValueError(
                "model.version is required so every decision records which model made it"
            )
        return self


class Rule(_Strict):
    """One CEL rule. `when` sees `input`, `output`, `confidence` and `context`."""

    id: str = Field(pattern=_NAME)
    when: str = Field(min_length=1)
    reason: str | None = None


class Rules(_Strict):
    refuse: list[Rule] = Field(default_factory=list)
    review: list[Rule] = Field(default_factory=list)
    auto: list[Rule] = Field(default_factory=list)

    def all(self) -> list[tuple[str, Rule]]:
        return (
            [("refuse", r) for r in self.refuse]
            + [("review", r) for r in self.review]
            + [("auto", r) for r in self.auto]
        )


class Sampling(_Strict):
    review_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class ReviewSpec(_Strict):
    """Who reviews, how many must agree, and the safe outcome when nobody decides in time."""

    reviewers: list[str] = Field(
        default_factory=list, description="Reviewer groups; empty lets any reviewer of the point."
    )
    approvals: int = Field(default=1, ge=1, le=5)
    four_eyes_when: str | None = None
    sla: Seconds | None = None
    on_expiry: str | None = None
    escalate_to: list[str] = Field(
        default_factory=list,
        description="Groups that get the task on a four-eyes disagreement or a first SLA expiry.",
    )
    escalation_approvals: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description=(
            "Agreeing votes needed once a task is escalated (disagreement or missed SLA). "
            "Default: as many as before escalating, so a four-eyes decision still needs two "
            "people. Set 1 only if one senior reviewer may settle an escalated task alone."
        ),
    )
    lease: Seconds = Field(default=900.0, description="How long a claim holds a task.")
    callback_url: str | None = Field(
        default=None, description="Receives every final review decision as a signed webhook."
    )
    display: list[str] = Field(
        default_factory=list,
        description="Input fields the review queue shows and sorts by, e.g. [amount, country].",
    )

    @model_validator(mode="after")
    def _check_expiry(self) -> ReviewSpec:
        if self.sla is not None and self.on_expiry is None:
            raise ValueError(
                "review.sla is set but review.on_expiry is not; name the safe outcome "
                "applied when nobody decides in time"
            )
        if self.on_expiry is not None and self.sla is None:
            raise ValueError("review.on_expiry needs review.sla, e.g. sla: 4h")
        if self.lease <= 0:
            raise ValueError("review.lease must be positive, e.g. lease: 15m")
        if self.callback_url is not None and not self.callback_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("review.callback_url must be an http:// or https:// URL")
        return self


class BreakerSpec(_Strict):
    """Circuit breaker with resilience4j semantics over a count-based sliding window."""

    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    window: int = Field(default=100, ge=1, le=100_000)
    min_calls: int = Field(default=20, ge=1)
    open_for: Seconds = 30.0
    half_open_calls: int = Field(default=5, ge=1, le=1000)


class FailureSpec(_Strict):
    """Where a decision goes when the model fails or the kill switch is on: `review` or an outcome."""

    on_error: str = REVIEW
    on_kill: str = REVIEW
    breaker: BreakerSpec = Field(default_factory=BreakerSpec)


class ChangeControl(_Strict):
    """How a change to this file goes live."""

    require_approval: bool = Field(
        default=False,
        description="A new version waits for a second person's approval before it decides.",
    )


class DecisionPointSpec(_Strict):
    """One decision point file."""

    point: str = Field(pattern=_NAME, max_length=64)
    owner: str = Field(min_length=1, description="Accountable owner; required.")
    description: str | None = None
    input: dict[str, Any] = Field(description="JSON Schema of what callers send.")
    model: ModelSpec
    outcomes: list[str] = Field(min_length=1)
    rules: Rules
    sampling: Sampling = Field(default_factory=Sampling)
    review: ReviewSpec = Field(default_factory=ReviewSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    monitoring: MonitoringSpec | None = None
    change_control: ChangeControl = Field(default_factory=ChangeControl)

    @model_validator(mode="before")
    @classmethod
    def _default_choices(cls, data: Any) -> Any:
        """An OpenAI-compatible model answers with the point's outcomes unless told otherwise."""
        model = data.get("model") if isinstance(data, dict) else None
        remote = model.get("remote") if isinstance(model, dict) else None
        if (
            isinstance(model, dict)
            and isinstance(remote, dict)
            and remote.get("protocol") == RemoteProtocol.OPENAI.value
            and remote.get("classes") is None
            and isinstance(data.get("outcomes"), list)
        ):
            remote = {**remote, "classes": list(data["outcomes"])}
            data = {**data, "model": {**model, "remote": remote}}
        return data

    @field_validator("outcomes")
    @classmethod
    def _unique_outcomes(cls, outcomes: list[str]) -> list[str]:
        if len(set(outcomes)) != len(outcomes):
            raise ValueError("outcomes must be unique")
        if REVIEW in outcomes:
            raise ValueError("'review' is a route, not an outcome; choose another name")
        return outcomes

    @model_validator(mode="after")
    def _check_references(self) -> DecisionPointSpec:
        allowed = set(self.outcomes)
        for name, value in (
            ("failure.on_error", self.failure.on_error),
            ("failure.on_kill", self.failure.on_kill),
        ):
            if value != REVIEW and value not in allowed:
                raise ValueError(
                    f"{name} is '{value}', which is not 'review' and not one of the outcomes "
                    f"{sorted(allowed)}"
                )
        if self.review.on_expiry is not None and self.review.on_expiry not in allowed:
            raise ValueError(
                f"review.on_expiry is '{self.review.on_expiry}', not one of the outcomes "
                f"{sorted(allowed)}"
            )
        if self.model.labels:
            for label, outcome in self.model.labels.items():
                if outcome not in allowed:
                    raise ValueError(
                        f"model.labels maps '{label}' to '{outcome}', not one of the outcomes "
                        f"{sorted(allowed)}"
                    )
        remote = self.model.remote
        if remote is not None and remote.classes:
            labels = self.model.labels or {}
            for answer in remote.classes:
                if labels.get(answer, answer) not in allowed:
                    raise ValueError(
                        f"model.remote.classes lists '{answer}', which is not one of the "
                        f"outcomes {sorted(allowed)}; map it with model.labels or fix it"
                    )
        seen: set[str] = set()
        for _, rule in self.rules.all():
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice; rule ids must be unique")
            seen.add(rule.id)
        if self.input.get("type") != "object":
            raise ValueError("input must be a JSON Schema with `type: object`")
        if self.monitoring is not None:
            properties = self.input.get("properties")
            self.monitoring.check(set(properties) if isinstance(properties, dict) else None)
        return self

    def safe_outcome(self, path: str) -> str | None:
        """The fixed outcome of a failure path, or None when the path is review."""
        return None if path == REVIEW else path
