"""The OpenAPI document, made true: FastAPI describes the routes; this adds what it cannot see.

Routes read their JSON bodies themselves (for speed and for the depth and NUL checks), so the
bodies are declared here with `json_body`. Every protected operation gets the bearer scheme,
and every operation the error statuses the server can answer, in the one error shape. FastAPI's
default 422 validation body is removed: a request that fails validation is a 400 here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from warden.api.errors import ErrorResponse
from warden.api.schemas import NO_NUL

REF = "#/components/schemas/{model}"
PUBLIC = frozenset({"/healthz", "/readyz"})
SCHEME = "bearer"

# Status -> when. Every operation may answer 400 (a NUL in the query or a header) and 413 (the
# body limit applies to every request); every protected one 401/403/404 and 503.
DESCRIPTIONS = {
    400: "The request is malformed; `error.field` names what to fix.",
    401: "No valid `Authorization: Bearer <token>`.",
    403: "The token lacks the role for this point.",
    404: "No such decision, point, task, alert or checkpoint.",
    409: "The request conflicts with the current state (e.g. a task claimed by another "
    "reviewer, an Idempotency-Key used for another request).",
    413: "The body is larger than WARDEN_MAX_BODY_BYTES.",
    422: "The input does not match the point's schema; it was refused and recorded "
    "(`error.decision_id`).",
    503: "The database could not be reached or could not record in time; nothing was "
    "acknowledged. Retry after `Retry-After` seconds.",
}
PROTECTED = (400, 401, 403, 404, 413, 503)
CHANGES = (409,)  # added to every POST and PUT
DECIDES = frozenset({("post", "/v1/decisions"), ("post", "/v1/decisions/batch")})


class ReadyStatus(BaseModel):
    """/readyz: `ok`, `degraded` (some point files did not load) or `unavailable`."""

    model_config = ConfigDict(extra="allow")

    status: str
    reason: str | None = None
    points: list[str] | None = None
    unavailable: list[dict[str, Any]] | None = None


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model` (its sub-models are hoisted
    into components when the document is built)."""
    schema = model.model_json_schema(ref_template=REF)
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with a builder of the completed document (built once)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(_schemas(ErrorResponse))
    schemas.update(_schemas(ReadyStatus))
    components["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: `warden token create`. Sent as "
            "`Authorization: Bearer <token>`.",
        }
    }
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            _complete(path, method, operation, schemas)
    return doc


def _complete(path: str, method: str, operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "schema" in body:
        defs = body["schema"].pop("$defs", {})
        for schema in (body["schema"], *defs.values()):
            _no_nul(schema)
        schemas.update(defs)
    operation["parameters"] = [
        p for p in operation.get("parameters", []) if p.get("name") != "Authorization"
    ]
    if not operation["parameters"]:
        del operation["parameters"]
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    if path in PUBLIC:
        statuses: tuple[int, ...] = (400, 413)
        if path == "/readyz":
            responses["503"] = {
                "description": "The database does not answer or the recorder has stopped.",
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model="ReadyStatus")}}
                },
            }
            responses["200"]["content"]["application/json"]["schema"] = {
                "$ref": REF.format(model="ReadyStatus")
            }
    else:
        operation["security"] = [{SCHEME: []}]
        statuses = PROTECTED
        if method in ("post", "put"):
            statuses += CHANGES
        if (method, path) in DECIDES:
            statuses += (422,)
    for status in statuses:
        responses.setdefault(
            str(status),
            {
                "description": DESCRIPTIONS[status],
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}
                },
            },
        )


def _schemas(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, model.__name__: schema}


def _no_nul(schema: Any) -> None:
    """Say in the document what the server enforces: no NUL in a string of a request body.
    The caller's own data (input, context, a proposal's output) is described without string
    types, so it stays open, as the server keeps it."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
            schema["pattern"] = NO_NUL
        for value in schema.values():
            _no_nul(value)
    elif isinstance(schema, list):
        for item in schema:
            _no_nul(item)
