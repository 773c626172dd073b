"""A language model behind an OpenAI-compatible chat completions API (OpenAI, vLLM, llama.cpp,
Ollama, ...), asked to pick one of a fixed set of answers.

The reply is constrained by a JSON schema (`response_format`) to `{"outcome": <one answer>}`; a
server that constrains otherwise (vLLM's `guided_choice` through `model.remote.request`) may
answer with the bare word. Confidence is the probability the model gave the answer's tokens,
exp(sum of their log-probabilities), where the server returns `logprobs`; otherwise the reply's
`model.remote.confidence_field`. With neither the call fails as 'invalid_output': a confidence
is never made up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from warden.models.base import INVALID_OUTPUT, ModelFailure, Prediction, describe
from warden.models.http import RemoteClient, malformed
from warden.policy.schema import ModelSpec

OUTCOME = "outcome"
_PLACEHOLDER = re.compile(r"\{\{\s*input(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}\}")
_KEY = re.compile(r'"outcome"\s*:\s*')
DEFAULT_PROMPT = (
    'Decide this case. Answer with JSON whose field "outcome" is one of: {answers}.\n\n'
    "Input: {{input}}"
)


class OpenAIChatModel:
    def __init__(self, spec: ModelSpec, client: RemoteClient) -> None:
        remote = spec.remote
        assert remote is not None and remote.classes  # the schema fills in the outcomes
        self.version = spec.version
        self._client = client
        self._answers = list(remote.classes)
        self._labels = spec.labels or {}
        self._confidence_field = remote.confidence_field
        self._prompt = remote.prompt or DEFAULT_PROMPT.replace(
            "{answers}", ", ".join(self._answers)
        )
        self._system = remote.system
        self._where = f"{client.url}/chat/completions"
        properties: dict[str, Any] = {OUTCOME: {"type": "string", "enum": self._answers}}
        if self._confidence_field is not None:
            properties[self._confidence_field] = {"type": "number", "minimum": 0, "maximum": 1}
        self._body: dict[str, Any] = {
            "model": remote.model,
            "temperature": 0,
            "logprobs": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "decision",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": list(properties),
                        "additionalProperties": False,
                    },
                },
            },
            **remote.request,
        }

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        messages = [] if self._system is None else [{"role": "system", "content": self._system}]
        messages.append({"role": "user", "content": render(self._prompt, input)})
        answer = self._client.post("/chat/completions", {**self._body, "messages": messages})
        content, logprobs = self._reply(answer)
        parsed = self._parse(content, answer)
        word, span, reply = parsed
        if word not in self._answers:
            raise ModelFailure(
                INVALID_OUTPUT,
                f"{self._where} answered {describe(word)}, not one of {self._answers}",
            )
        confidence = token_probability(content, span, logprobs)
        if confidence is None:
            confidence = self._field_confidence(reply, answer)
        return Prediction(self._labels.get(word, word), confidence)

    def _reply(self, answer: Any) -> tuple[str, Any]:
        try:
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise malformed(self._where, "no choices[0].message.content", answer) from None
        if not isinstance(content, str):
            raise malformed(self._where, "choices[0].message.content is not text", answer)
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        return content, logprobs

    def _parse(self, content: str, answer: Any) -> tuple[object, tuple[int, int], Any]:
        """The answer word, where it stands in `content`, and the decoded JSON reply (or None)."""
        stripped = content.strip()
        if stripped in self._answers:  # a bare word, from a server that constrains by choice
            start = content.index(stripped)
            return stripped, (start, start + len(stripped)), None
        try:
            reply = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise malformed(
                self._where, f"the reply {describe(content)} is neither JSON nor an answer", answer
            ) from None
        if not isinstance(reply, dict) or OUTCOME not in reply:
            raise malformed(self._where, f'the reply {describe(content)} has no "outcome"', answer)
        word = reply[OUTCOME]
        return word, _value_span(content, word), reply

    def _field_confidence(self, reply: Any, answer: Any) -> Any:
        if self._confidence_field is None:
            raise ModelFailure(
                INVALID_OUTPUT,
                f"{self._where} returned no logprobs for the answer, and model.remote."
                "confidence_field is not set; use a server that returns logprobs or name the "
                "reply field that holds the confidence",
            )
        if not isinstance(reply, dict) or self._confidence_field not in reply:
            raise malformed(
                self._where, f'the reply has no "{self._confidence_field}" field', answer
            )
        return reply[self._confidence_field]  # the guard checks it is a number in [0, 1]


def render(template: str, input: Mapping[str, Any]) -> str:
    """The prompt with {{input}} as the input's JSON and {{input.NAME}} as one field's value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return orjson.dumps(input, option=orjson.OPT_SORT_KEYS).decode()
        field = input.get(name)
        return field if isinstance(field, str) else orjson.dumps(field).decode()

    return _PLACEHOLDER.sub(value, template)


def _value_span(content: str, word: object) -> tuple[int, int]:
    """Where the outcome's string value stands in the JSON text; (0, 0) when it cannot be found
    (then the logprobs cannot be attributed, and the confidence field is used)."""
    key = _KEY.search(content)
    if key is None or not isinstance(word, str):
        return (0, 0)
    quoted = orjson.dumps(word).decode()
    if not content.startswith(quoted, key.end()):
        return (0, 0)
    return (key.end() + 1, key.end() + len(quoted) - 1)


def token_probability(content: str, span: tuple[int, int], logprobs: Any) -> float | None:
    """exp(sum of the log-probabilities of the tokens that make up content[span]), or None when
    the server returned no usable logprobs for it (none, or tokens that do not spell the reply).
    """
    start, end = span
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if end <= start or not isinstance(tokens, list) or not tokens:
        return None
    total, position = 0.0, 0
    for token in tokens:
        text = token.get("token") if isinstance(token, dict) else None
        logprob = token.get("logprob") if isinstance(token, dict) else None
        if not isinstance(text, str) or not isinstance(logprob, int | float):
            return None
        if position < end and position + len(text) > start:
            total += float(logprob)
        position += len(text)
    if position != len(content) or "".join(t["token"] for t in tokens) != content:
        return None
    return math.exp(total)
