"""The OpenAPI document is true: schemathesis calls every operation with an admin token and
generated requests, and fails on any 5xx or any response the document does not describe."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
)

from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.demo.server import BackgroundServer, bind
from warden.engine import Engine

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}
# Examples per operation: the whole run stays around a minute on a loaded machine.
EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}


@pytest.fixture
def server(engine: Engine) -> Iterator[tuple[FastAPI, str]]:
    """The API on 127.0.0.1 (a live server answers several times faster than the ASGI
    transport, so the same minute covers more requests), with a few decisions to find."""
    api = create_app(engine, max_body_bytes=200_000, workers=[])
    background = BackgroundServer(api, bind("127.0.0.1", 0))
    url = f"http://127.0.0.1:{background.port}"
    background.start(f"{url}/readyz", timeout=60)
    admin = _admin(engine)
    with httpx.Client(base_url=url, headers=admin, timeout=30) as client:
        for amount in (1000, 90_000):
            body = {"point": "loan_approval", "input": {**GOOD, "amount": amount}}
            assert client.post("/v1/decisions", json=body).status_code in (200, 202)
    yield api, url
    background.stop()


def _admin(engine: Engine) -> dict[str, str]:
    secret, _ = create_token(engine.recorder, name="st", roles=["admin"], points=["*"], actor="t")
    return {"Authorization": f"Bearer {secret}"}


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_dict(app.openapi())
    return [result.ok() for result in schema.get_all_operations()]


def _run(
    operation: Any,
    mode: GenerationMode,
    url: str,
    session: requests.Session,
    failures: list[str],
) -> None:
    checks = (
        None if mode is GenerationMode.POSITIVE else [not_a_server_error, negative_data_rejection]
    )
    excluded = []
    if operation.path == "/v1/audit/consistency":
        excluded.append(positive_data_acceptance)  # `old` <= `new` is beyond a schema: a 400

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session)
        try:
            case.validate_response(response, checks=checks, excluded_checks=excluded)
        except (Exception, BaseExceptionGroup) as exc:  # collect them all, not the first
            failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}")

    try:
        check()
    except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE


def test_every_operation_answers_as_documented(server: tuple[FastAPI, str], engine: Engine) -> None:
    app, url = server
    session = requests.Session()
    session.headers.update(_admin(engine))
    operations = _operations(app)
    assert len(operations) >= 40
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, url, session, failures)
    print(f"{len(operations)} operations in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_work_offline(server: tuple[FastAPI, str]) -> None:
    """/docs and /redoc name no other host, and every script, style and icon they name is
    served by Warden itself."""
    _, url = server
    with httpx.Client(base_url=url, timeout=30) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert "<html" in html.lower()
            assert not re.search(r"(?:https?:)?//[a-z0-9]", html, re.IGNORECASE), html
            assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
            # the document itself: Swagger UI's `url: '...'`, ReDoc's `spec-url="..."`
            assets += re.findall(r"""(?:url:\s*|spec-url=)["']([^"']+)["']""", html)
            assert "/openapi.json" in assets and len(assets) >= 3, html
            for asset in assets:
                response = client.get(asset)
                assert response.status_code == 200, asset
                assert len(response.content) > 100, asset


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_405_names_every_allowed_method(engine: Engine) -> None:
    """Each path answers a method it does not serve with 405 and an `Allow` header listing
    exactly the methods the document gives it (it used to be missing)."""
    app = create_app(engine, workers=[])
    doc = app.openapi()
    templates = [
        (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), set(operations))
        for path, operations in doc["paths"].items()
    ]
    with TestClient(app) as client:
        for path in doc["paths"]:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            # /v1/decisions/batch is also /v1/decisions/{decision_id}: every template counts
            declared = {m.upper() for t, ms in templates if t.match(concrete) for m in ms}
            for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - declared):
                response = client.request(method, concrete)
                assert response.status_code == 405, (method, path, response.text)
                assert response.json()["error"]["type"] == "method_not_allowed"
                allowed = {m.strip() for m in response.headers["allow"].split(",")}
                assert allowed == declared, (method, path, allowed)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_document_declares_security_bodies_and_errors(engine: Engine) -> None:
    doc = create_app(engine, workers=[]).openapi()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["400"]["content"]["application/json"]["schema"] == error
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation
                continue
            assert operation["security"] == [{"bearer": []}], (method, path)
            for status in ("401", "403", "404", "413", "503"):
                assert responses[status]["content"]["application/json"]["schema"] == error
            assert "422" not in responses or (method, path) in {
                ("post", "/v1/decisions"),
                ("post", "/v1/decisions/batch"),
            }
    bodies = {
        (m, p) for p, ops in doc["paths"].items() for m, op in ops.items() if "requestBody" in op
    }
    for expected in [
        ("post", "/v1/decisions"),
        ("post", "/v1/decisions/batch"),
        ("post", "/v1/kill"),
        ("post", "/v1/points/{point}/rollout"),
        ("put", "/v1/points/{point}/models/aliases/{alias}"),
        ("post", "/v1/reviews/{decision_id}/reject"),
        ("post", "/v1/alerts/{alert_id}/resolve"),
    ]:
        assert expected in bodies
    assert "HTTPValidationError" not in doc["components"]["schemas"]
