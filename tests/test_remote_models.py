"""kind: remote — models served over HTTP (Open Inference Protocol v2, OpenAI-compatible chat),
tested against real HTTP servers on 127.0.0.1 that answer as the test chooses."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.remote_servers import FakeServer, Responder, chat_answer, fake_server
from warden.models import GuardedModel, ModelFailure, ModelLoadError, Prediction, load_model
from warden.policy.schema import (
    BreakerSpec,
    DecisionPointSpec,
    FailureSpec,
    ModelKind,
)

OUTCOMES = ["approve", "decline", "refer"]
FEATURES = ["income", "amount"]


def point(model: dict[str, Any], outcomes: list[str] = OUTCOMES) -> DecisionPointSpec:
    return DecisionPointSpec.model_validate(
        {
            "point": "loan",
            "owner": "risk@example.com",
            "input": {"type": "object"},
            "model": model,
            "outcomes": outcomes,
            "rules": {},
        }
    )


def v2_model(url: str, **remote: Any) -> dict[str, Any]:
    return {
        "kind": "remote",
        "version": "3",
        "features": FEATURES,
        "timeout_ms": 2000,
        "remote": {
            "protocol": "v2",
            "url": url,
            "model": "credit",
            "classes": ["0", "1", "2"],
            **remote,
        },
        "labels": {"0": "decline", "1": "approve", "2": "refer"},
    }


def chat_model(url: str, **remote: Any) -> dict[str, Any]:
    return {
        "kind": "remote",
        "version": "llama-3.1-8b",
        "timeout_ms": 2000,
        "remote": {"protocol": "openai", "url": f"{url}/v1", "model": "llama", **remote},
    }


def loaded(spec: DecisionPointSpec, tmp_path: Path) -> Any:
    model = load_model(spec.model, tmp_path)
    assert model is not None
    return model


def guarded(spec: DecisionPointSpec, tmp_path: Path, **breaker: Any) -> GuardedModel:
    return GuardedModel(
        loaded(spec, tmp_path),
        spec=spec.model,
        failure=FailureSpec(breaker=BreakerSpec(**(breaker or {"min_calls": 100}))),
        outcomes=spec.outcomes,
    )


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeServer]:
    """One server for the many examples of a property test; each example sets its responder."""
    with fake_server(v2_responder) as server:
        yield server


def answering(server: FakeServer, responder: Responder) -> FakeServer:
    server.responder = responder
    server.requests.clear()
    return server


def code_of(model: Any, input: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ModelFailure) as raised:
        model.call(input) if isinstance(model, GuardedModel) else model.predict(input)
    return raised.value.code, raised.value.message


# -- Open Inference Protocol v2 -----------------------------------------------------------------


def softmax_rows(body: Any) -> list[float]:
    """Three class probabilities per row, a pure function of the row, as a classifier gives."""
    tensor = body["inputs"][0]
    rows, width = tensor["shape"]
    data = tensor["data"]
    out: list[float] = []
    for r in range(rows):
        income, amount = data[r * width], data[r * width + 1]
        scores = [amount / 1000, income / 1000, 1.0]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        out += [e / sum(exps) for e in exps]
    return out


def v2_responder(path: str, body: Any) -> tuple[int, Any]:
    if not path.endswith("/infer"):
        return 404, {"error": f"no route {path}"}
    rows = body["inputs"][0]["shape"][0]
    names = [o["name"] for o in body.get("outputs", [{"name": "predict_proba"}])]
    return 200, {
        "model_name": "credit",
        "outputs": [
            {"name": "predict", "shape": [rows, 1], "datatype": "INT64", "data": [7] * rows},
            {
                "name": names[0],
                "shape": [rows, 3],
                "datatype": "FP64",
                "data": softmax_rows(body),
            },
        ],
    }


def expected(input: dict[str, float]) -> Prediction:
    probabilities = softmax_rows(
        {"inputs": [{"shape": [1, 2], "data": [input["income"], input["amount"]]}]}
    )
    best = max(range(3), key=lambda i: probabilities[i])
    return Prediction(["decline", "approve", "refer"][best], probabilities[best])


def test_v2_sends_the_features_as_one_tensor_and_reads_the_named_output(tmp_path: Path) -> None:
    with fake_server(v2_responder) as server:
        spec = point(v2_model(server.url, output="predict_proba", model_version="v 1"))
        model = loaded(spec, tmp_path)
        input = {"income": 2500.0, "amount": 900, "other": "ignored"}
        assert model.predict(input) == expected(input)
    path, body, headers = server.requests[0]
    assert path == "/v2/models/credit/versions/v%201/infer"
    assert body == {
        "inputs": [
            {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [2500.0, 900.0]}
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    assert headers["content-type"] == "application/json"


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "income": st.floats(0, 5000, allow_nan=False),
                    "amount": st.integers(0, 5000),
                }
            ),
            st.just({"income": "lots", "amount": 3}),  # a row without usable features
        ),
        min_size=1,
        max_size=12,
    )
)
def test_v2_batch_is_one_request_and_only_bad_rows_fail(
    rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory, shared: FakeServer
) -> None:
    server = answering(shared, v2_responder)
    spec = point(v2_model(server.url, output="predict_proba"))
    results = guarded(spec, tmp_path_factory.getbasetemp()).call_many(rows)
    good = [r for r in rows if not isinstance(r["income"], str)]
    assert len(server.requests) == (1 if good else 0)
    if good:
        assert server.requests[0][1]["inputs"][0]["shape"] == [len(good), 2]
    for row, result in zip(rows, results, strict=True):
        if isinstance(row["income"], str):
            assert isinstance(result, ModelFailure) and result.code == "model_error"
            assert "'income'" in result.message
        else:
            assert result == expected(row)


def test_v2_concurrent_async_calls_share_requests(tmp_path: Path) -> None:
    with fake_server(v2_responder) as server:
        model = guarded(point(v2_model(server.url, output="predict_proba")), tmp_path)
        inputs = [{"income": float(i * 100), "amount": 500} for i in range(40)]

        async def all_of_them() -> list[Prediction]:
            return await asyncio.gather(*(model.call_async(x) for x in inputs))

        assert asyncio.run(all_of_them()) == [expected(x) for x in inputs]
    assert len(server.requests) < len(inputs)  # gathered into vectorised calls
    assert sum(r[1]["inputs"][0]["shape"][0] for r in server.requests) == len(inputs)


def test_v2_reuses_one_keep_alive_connection(tmp_path: Path) -> None:
    with fake_server(v2_responder) as server:
        model = guarded(point(v2_model(server.url, output="predict_proba")), tmp_path)
        for i in range(20):
            model.call({"income": float(i), "amount": 1})
    assert len(server.requests) == 20
    assert len(server.connections) == 1


def test_v2_single_column_is_the_second_class_probability(tmp_path: Path) -> None:
    def sigmoid(path: str, body: Any) -> tuple[int, Any]:
        return 200, {
            "outputs": [{"name": "p", "shape": [2], "datatype": "FP32", "data": [0.8, 0.3]}]
        }

    with fake_server(sigmoid) as server:
        model = {**v2_model(server.url), "labels": None}
        model["remote"] = {**model["remote"], "classes": ["decline", "approve"], "datatype": "FP32"}
        spec = point(model)
        results = guarded(spec, tmp_path).call_many(
            [{"income": 1, "amount": 2}, {"income": 3, "amount": 4}]
        )
    assert results == [Prediction("approve", 0.8), Prediction("decline", pytest.approx(0.7))]
    assert server.requests[0][1]["inputs"][0]["datatype"] == "FP32"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"outputs": []}, "no outputs"),
        ({"error": "x"}, "no outputs"),
        ({"outputs": [{"name": "other", "shape": [1, 3], "data": [0, 0, 1]}]}, "no output named"),
        (
            {"outputs": [{"name": "predict_proba", "shape": [1, 2], "data": [0.5, 0.5]}]},
            "2 columns",
        ),
        ({"outputs": [{"name": "predict_proba", "shape": [1, 3], "data": [0.5]}]}, "1 values"),
        ({"outputs": [{"name": "predict_proba", "shape": [2, 3], "data": [0.1] * 6}]}, "1 rows"),
        ({"outputs": [{"name": "predict_proba", "shape": "3", "data": [0.1] * 3}]}, "shape"),
        ({"outputs": [{"name": "predict_proba", "shape": [1, 3], "data": ["a", 1, 2]}]}, "numbers"),
        ([1, 2], "no outputs"),
    ],
)
def test_v2_malformed_answers_are_invalid_output(answer: Any, says: str, tmp_path: Path) -> None:
    with fake_server(lambda path, body: (200, answer)) as server:
        model = guarded(point(v2_model(server.url, output="predict_proba")), tmp_path)
        code, message = code_of(model, {"income": 1, "amount": 2})
    assert code == "invalid_output"
    assert says in message and server.url in message


def test_v2_probabilities_out_of_range_are_refused_by_the_guard(tmp_path: Path) -> None:
    answer = {"outputs": [{"name": "p", "shape": [1, 3], "data": [0.1, 1.5, float("nan")]}]}
    with fake_server(lambda path, body: (200, answer)) as server:
        model = guarded(point(v2_model(server.url)), tmp_path)
        assert code_of(model, {"income": 1, "amount": 2})[0] == "invalid_output"


def test_error_status_not_json_timeout_and_refused_connection(tmp_path: Path) -> None:
    with fake_server(lambda path, body: (503, {"error": "model is loading"})) as server:
        code, message = code_of(
            guarded(point(v2_model(server.url)), tmp_path), {"income": 1, "amount": 2}
        )
        assert code == "model_error"
        assert "HTTP 503" in message and "model is loading" in message
    with fake_server(lambda path, body: (200, b"<html>proxy</html>")) as server:
        code, message = code_of(
            guarded(point(v2_model(server.url)), tmp_path), {"income": 1, "amount": 2}
        )
        assert (code, "not JSON" in message) == ("invalid_output", True)
    with fake_server(lambda path, body: (0, None)) as server:
        spec = point({**v2_model(server.url), "timeout_ms": 200})
        assert code_of(guarded(spec, tmp_path), {"income": 1, "amount": 2})[0] == "model_timeout"
        # the socket gives up too (the HTTP timeout is the point's), not only the guard
        assert code_of(loaded(spec, tmp_path), {"income": 1, "amount": 2})[0] == "model_timeout"
        server.release.set()
    closed = server.url  # the server is gone: nothing listens there any more
    code, message = code_of(guarded(point(v2_model(closed)), tmp_path), {"income": 1, "amount": 2})
    assert code == "model_error" and "cannot call" in message


def test_failing_server_opens_the_breaker_and_is_no_longer_called(tmp_path: Path) -> None:
    with fake_server(lambda path, body: (500, {"error": "boom"})) as server:
        model = guarded(point(v2_model(server.url)), tmp_path, min_calls=4, window=4, open_for=60)
        codes = [code_of(model, {"income": 1, "amount": 2})[0] for _ in range(10)]
    assert codes[:4] == ["model_error"] * 4
    assert set(codes[4:]) == {"breaker_open"}
    assert len(server.requests) == 4


def test_headers_take_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_TEST_MODEL_TOKEN", "s3cret")
    headers = {"Authorization": "Bearer ${WARDEN_TEST_MODEL_TOKEN}", "X-Team": "risk"}
    with fake_server(v2_responder) as server:
        model = loaded(
            point(v2_model(server.url, output="predict_proba", headers=headers)), tmp_path
        )
        model.predict({"income": 1, "amount": 2})
    sent = {k.lower(): v for k, v in server.requests[0][2].items()}
    assert sent["authorization"] == "Bearer s3cret" and sent["x-team"] == "risk"
    monkeypatch.delenv("WARDEN_TEST_MODEL_TOKEN")
    with pytest.raises(ModelLoadError, match="WARDEN_TEST_MODEL_TOKEN"):
        load_model(point(v2_model("http://127.0.0.1:9", headers=headers)).model, tmp_path)


# -- OpenAI-compatible chat completions ----------------------------------------------------------


def reply_with(content: str, tokens: list[tuple[str, float]] | None) -> Any:
    return lambda path, body: (200, chat_answer(content, tokens))


def test_chat_request_constrains_the_reply_to_the_outcomes(tmp_path: Path) -> None:
    content = '{"outcome":"refer"}'
    tokens = [
        ('{"', -0.01),
        ("outcome", 0.0),
        ('":"', 0.0),
        ("ref", -0.2),
        ("er", -0.1),
        ('"}', 0.0),
    ]
    with fake_server(reply_with(content, tokens)) as server:
        spec = point(
            chat_model(
                server.url,
                system="You are a credit officer.",
                prompt="Amount {{input.amount}} for {{ input.name }}. All: {{input}}",
                request={"max_tokens": 20, "seed": 1},
            )
        )
        prediction = guarded(spec, tmp_path).call({"amount": 900, "name": "Ada"})
    assert prediction == Prediction("refer", pytest.approx(math.exp(-0.3)))
    path, body, _ = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "llama" and body["logprobs"] is True and body["temperature"] == 0
    assert body["max_tokens"] == 20 and body["seed"] == 1
    assert body["messages"] == [
        {"role": "system", "content": "You are a credit officer."},
        {"role": "user", "content": 'Amount 900 for Ada. All: {"amount":900,"name":"Ada"}'},
    ]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["outcome"]["enum"] == OUTCOMES
    assert schema["required"] == ["outcome"] and schema["additionalProperties"] is False


@settings(max_examples=60, deadline=None)
@given(
    outcome=st.sampled_from(OUTCOMES),
    spacing=st.sampled_from(["", " ", "\n  "]),
    data=st.data(),
)
def test_chat_confidence_is_the_probability_of_the_outcome_tokens(
    outcome: str,
    spacing: str,
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
    shared: FakeServer,
) -> None:
    """Any tokenisation of the reply in which the answer's characters form whole tokens: the
    confidence is exp of the sum of exactly those tokens' logprobs, whatever the others say."""
    prefix, value, suffix = '{"outcome":' + spacing + '"', outcome, '"' + spacing + "}"

    def split(text: str) -> list[str]:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4)))
        cuts = [c for c in cuts if c < len(text)]
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    logprob = st.floats(-8.0, 0.0, allow_nan=False)
    inner = [(t, data.draw(logprob)) for t in split(value)]
    outer = (
        [(t, data.draw(logprob)) for t in split(prefix)],
        [(t, data.draw(logprob)) for t in split(suffix)],
    )
    tokens = outer[0] + inner + outer[1]
    server = answering(shared, reply_with(prefix + value + suffix, tokens))
    spec = point(chat_model(server.url))
    prediction = loaded(spec, tmp_path_factory.getbasetemp()).predict({"a": 1})
    assert prediction.outcome == outcome
    assert prediction.confidence == pytest.approx(math.exp(sum(lp for _, lp in inner)), rel=1e-12)


def test_chat_bare_word_reply_from_a_choice_constrained_server(tmp_path: Path) -> None:
    with fake_server(reply_with("approve", [("app", -0.5), ("rove", -0.25)])) as server:
        spec = point(chat_model(server.url, request={"guided_choice": ["approve", "decline"]}))
        assert loaded(spec, tmp_path).predict({}) == Prediction(
            "approve", pytest.approx(math.exp(-0.75))
        )
    assert server.requests[0][1]["guided_choice"] == ["approve", "decline"]


def test_chat_without_logprobs_reads_the_named_confidence_field(tmp_path: Path) -> None:
    with fake_server(reply_with('{"outcome": "decline", "certainty": 0.62}', None)) as server:
        spec = point(chat_model(server.url, confidence_field="certainty"))
        assert guarded(spec, tmp_path).call({}) == Prediction("decline", 0.62)
        schema = server.requests[0][1]["response_format"]["json_schema"]["schema"]
        assert schema["required"] == ["outcome", "certainty"]
        assert schema["properties"]["certainty"] == {"type": "number", "minimum": 0, "maximum": 1}
    with fake_server(reply_with('{"outcome": "decline"}', None)) as server:
        code, message = code_of(guarded(point(chat_model(server.url)), tmp_path), {})
        assert (
            code == "invalid_output" and "no logprobs" in message and "confidence_field" in message
        )


def test_chat_logprobs_that_do_not_spell_the_reply_fall_back_to_the_field(tmp_path: Path) -> None:
    content = '{"outcome":"approve","p":0.9}'
    with fake_server(reply_with(content, [("something else", -0.1)])) as server:
        spec = point(chat_model(server.url, confidence_field="p"))
        assert loaded(spec, tmp_path).predict({}) == Prediction("approve", 0.9)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"outcome": "maybe"}', "not one of"),
        ('{"decision": "approve"}', 'no "outcome"'),
        ("I think approve", "neither JSON nor an answer"),
        ('{"outcome": "approve", "p": 1.5}', "between 0 and 1"),
        ('{"outcome": "approve", "p": "high"}', "not a number"),
        ('{"outcome": "approve"}', 'no "p" field'),
    ],
)
def test_chat_replies_outside_the_contract_are_invalid_output(
    content: str, says: str, tmp_path: Path
) -> None:
    with fake_server(reply_with(content, None)) as server:
        model = guarded(point(chat_model(server.url, confidence_field="p")), tmp_path)
        code, message = code_of(model, {})
    assert code == "invalid_output" and says in message


@pytest.mark.parametrize(
    "answer", [{}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, [1]]
)
def test_chat_answers_without_a_reply_are_invalid_output(answer: Any, tmp_path: Path) -> None:
    with fake_server(lambda path, body: (200, answer)) as server:
        assert code_of(guarded(point(chat_model(server.url)), tmp_path), {})[0] == "invalid_output"


def test_chat_labels_map_answers_to_outcomes(tmp_path: Path) -> None:
    with fake_server(
        reply_with('{"outcome":"yes"}', [('{"outcome":"', 0.0), ("yes", -0.1), ('"}', 0.0)])
    ) as server:
        model = {**chat_model(server.url), "labels": {"yes": "approve", "no": "decline"}}
        model["remote"] = {**model["remote"], "classes": ["yes", "no"]}
        assert loaded(point(model), tmp_path).predict({}) == Prediction(
            "approve", pytest.approx(math.exp(-0.1))
        )
        enum = server.requests[0][1]["response_format"]["json_schema"]["schema"]["properties"]
        assert enum["outcome"]["enum"] == ["yes", "no"]


# -- the point file -------------------------------------------------------------------------------


def test_http_is_an_alias_of_remote() -> None:
    spec = point({**v2_model("http://127.0.0.1:8080"), "kind": "http"})
    assert spec.model.kind is ModelKind.REMOTE


def test_openai_choices_default_to_the_outcomes() -> None:
    spec = point(chat_model("http://127.0.0.1:8000"))
    assert spec.model.remote is not None and spec.model.remote.classes == OUTCOMES


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"kind": "remote", "version": "1"}, "model.remote is required"),
        ({**v2_model("http://x"), "kind": "callable", "function": "m:f"}, "does not apply to kind"),
        (v2_model("ftp://x"), "http:// or https://"),
        (v2_model("http://x", classes=None), "classes is required for protocol v2"),
        (v2_model("http://x", classes=["0", "0"]), "unique"),
        (v2_model("http://x", classes=["0", "9"]), "'9', which is not one of the outcomes"),
        ({**v2_model("http://x"), "features": None}, "features is required for protocol v2"),
        (v2_model("http://x", prompt="hi"), "prompt does not apply to protocol 'v2'"),
        (chat_model("http://x", output="p"), "output does not apply to protocol 'openai'"),
        (chat_model("http://x", classes=["approve", "later"]), "'later'"),
        (v2_model("http://x", datatype="INT8"), "FP"),
        (v2_model("http://x", surprise=1), "surprise"),
    ],
)
def test_point_file_mistakes_are_refused_with_the_field(model: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        point(model)
    assert says in str(raised.value)


def test_a_remote_point_loads_and_decides_from_yaml(tmp_path: Path) -> None:
    from warden.policy.loader import load_point

    with fake_server(v2_responder) as server:
        (tmp_path / "loan.yaml").write_text(
            f"""
point: loan
owner: risk@example.com
input: {{type: object, properties: {{income: {{type: number}}, amount: {{type: number}}}}}}
model:
  kind: http
  version: "3"
  features: [income, amount]
  labels: {{"0": decline, "1": approve, "2": refer}}
  remote: {{protocol: v2, url: "{server.url}", model: credit, output: predict_proba,
            classes: ["0", "1", "2"]}}
outcomes: [approve, decline, refer]
rules: {{auto: [{{id: sure, when: "confidence > 0.5"}}]}}
"""
        )
        compiled = load_point(tmp_path / "loan.yaml")
        assert compiled.spec.model.kind is ModelKind.REMOTE
        input = {"income": 4000.0, "amount": 10.0}
        assert json.loads(json.dumps(input)) == input
        model = load_model(compiled.spec.model, tmp_path)
        assert model is not None and model.predict(input) == expected(input)


# -- decisions -------------------------------------------------------------------------------------

CHAT_POINT = """
point: support_refund
owner: support-ops@example.com
input:
  type: object
  required: [message, amount]
  properties:
    message: {{type: string}}
    amount: {{type: number}}
model:
  kind: remote
  version: "llama-3.1-8b"
  timeout_ms: 300
  remote:
    protocol: openai
    url: "{url}/v1"
    model: llama
    prompt: "Refund {{{{input.amount}}}}? The customer wrote: {{{{input.message}}}}"
outcomes: [refund, deny]
rules:
  auto:
    - {{id: sure, when: "confidence >= 0.9"}}
failure:
  on_error: deny
  breaker: {{failure_rate: 1.0, window: 100, min_calls: 100}}
"""


def test_decisions_with_a_remote_model_route_every_failure_safely(tmp_path: Path, db: Any) -> None:
    """A sure answer is decided alone; every way the remote call fails takes failure.on_error,
    recorded with its code, and is never auto."""
    from warden.decision import Route
    from warden.engine import Engine
    from warden.policy.loader import load_points

    answers: list[tuple[int, Any]] = [
        (
            200,
            chat_answer(
                '{"outcome":"refund"}', [('{"outcome":"', 0.0), ("refund", -0.01), ('"}', 0.0)]
            ),
        ),
        (200, chat_answer('{"outcome":"refund_twice"}', None)),
        (503, {"error": "overloaded"}),
        (0, None),  # hangs past timeout_ms
        (200, b"not json"),
    ]
    with fake_server(lambda path, body: answers.pop(0)) as server:
        folder = tmp_path / "points"
        folder.mkdir()
        (folder / "support_refund.yaml").write_text(CHAT_POINT.format(url=server.url))
        engine = Engine(load_points(folder), db, actor="test")
        try:
            input = {"message": "parcel never came", "amount": 25}
            decisions = [engine.decide("support_refund", input) for _ in range(5)]
        finally:
            server.release.set()
            engine.close()
    first, *failed = decisions
    assert (first.route, first.outcome, first.model_version) == (
        Route.AUTO,
        "refund",
        "llama-3.1-8b",
    )
    assert first.confidence == pytest.approx(math.exp(-0.01))
    assert [(d.route, d.outcome) for d in failed] == [(Route.FALLBACK, "deny")] * 4
    assert [d.reasons[0].code for d in failed] == [
        "invalid_output",
        "model_error",
        "model_timeout",
        "invalid_output",
    ]
    prompt = server.requests[0][1]["messages"][-1]["content"]
    assert prompt == "Refund 25? The customer wrote: parcel never came"


def test_a_remote_model_is_rebuilt_from_its_recipe_in_another_process(tmp_path: Path) -> None:
    """Shadow and worker processes rebuild models from a pickled recipe: a remote one too."""
    import pickle

    with fake_server(v2_responder) as server:
        original = guarded(point(v2_model(server.url, output="predict_proba")), tmp_path)
        recipe = original.recipe()
        assert recipe is not None
        rebuilt = pickle.loads(pickle.dumps(recipe)).build()
        input = {"income": 3000.0, "amount": 200.0}
        assert rebuilt.call(input) == original.call(input) == expected(input)


def test_a_failed_batch_request_fails_its_rows_without_a_request_per_row(tmp_path: Path) -> None:
    """A server that is down is asked once per batch, not once more for every row."""
    with fake_server(lambda path, body: (503, {"error": "down"})) as server:
        model = guarded(point(v2_model(server.url)), tmp_path)
        results = model.call_many([{"income": float(i), "amount": 1.0} for i in range(6)])
    assert len(server.requests) == 1
    assert all(isinstance(r, ModelFailure) and r.code == "model_error" for r in results)
