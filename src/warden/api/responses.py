"""JSON responses rendered with orjson (fast, and refuses NaN rather than emitting invalid JSON).

A decision, the body of the hot path, is serialised straight from its fields to JSON bytes
rather than through pydantic's `model_dump` first: the same bytes (a property test holds
them equal), in about a quarter of the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from warden.decision import Decision, Reason

# pydantic writes a UTC time with `Z`; so does orjson with this option
_OPTIONS = orjson.OPT_UTC_Z


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _default(value: Any) -> Any:
    """What orjson does not write itself, as pydantic's JSON mode writes it."""
    if isinstance(value, Reason):
        return value.__dict__  # its fields, in order: the model allows no extra ones
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, float):  # a float subclass, such as numpy.float64
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def decision_json(decision: Decision) -> bytes:
    """`orjson.dumps(decision.model_dump(mode="json"))`, written straight from the fields
    (a `Decision` holds exactly its declared fields, in order: it allows no extra ones)."""
    return orjson.dumps(decision.__dict__, default=_default, option=_OPTIONS)


def decisions_page_json(decisions: Iterable[Decision], next_cursor: str | None) -> bytes:
    """A `DecisionPage` body."""
    page = {"data": [d.__dict__ for d in decisions], "next_cursor": next_cursor}
    return orjson.dumps(page, default=_default, option=_OPTIONS)


def json_bytes_response(body: bytes, status_code: int = 200) -> Response:
    """A response of JSON bytes already rendered."""
    return Response(body, status_code, media_type="application/json")
