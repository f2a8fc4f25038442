"""The OpenAI surface beyond plain chat, through the gateway with the openai SDK on llama.cpp.

One server, one instance with two deployments: the chat model and the catalog's demo embedder.
Tool calls and ``response_format`` prove that the request reached llama-server intact and that
the catalog's Jinja template and the grammar built from the request honoured it: ``tool_calls``
with schema-shaped arguments exist only if llama-server parsed the template's call markers for
the tools it was given (with the GGUF's own template it drops ``tools`` and answers text).
Embeddings prove the embedder started as one and is routed by the catalog; and every refusal
has OpenAI's error shape, so SDKs raise their usual exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.conftest import running_server
from tests.support import specs
from tests.support.server import Server
from tests.support.waiting import wait_for

CHAT = specs.MODEL
EMBED = "huggingfacetb/smollm2-135m-embed"
DIMENSION = 576
"""SmolLM2-135M's hidden size: one mean-pooled vector has this many numbers."""
ERROR_KEYS = {"message", "type", "param", "code"}

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather like in Paris today?"},
    # The assistant's answer begun with the catalog template's call marker (llama-server continues
    # a final assistant message). A 135M model seldom opens a call itself, and llama.cpp's
    # "required" lets it write text first, so without this the answer could be prose until
    # max_tokens; from here on only the tools' grammar decides, which is what is under test.
    {"role": "assistant", "content": "<tool_call>\n"},
]
ONE_CALL = ["</tool_call>"]
"""Stop after the first call: the grammar allows more, and the model would repeat it until max_tokens."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server("sqlite", tmp_path_factory.mktemp("surface") / "inferd", controller=True, gateway=True,
                        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000") as srv:
        yield srv


@pytest.fixture(scope="module")
def instance(server: Server) -> dict[str, Any]:
    """One instance serving both models, one replica each."""
    deployment = specs.spec()["model_deployments"][0]
    body = specs.create_body("surface")
    body["spec"]["model_deployments"] = [deployment, {**deployment, "model_slug": EMBED}]
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=body)
        assert created.status_code == 202, created.text
        instance_id = created.json()["dedicated_inference"]["id"]
        wait_for(
            lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
            timeout=90, what="the instance active",
        )
        endpoints = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["endpoints"]
    return {"base": endpoints["public_endpoint_fqdn"], "token": created.json()["token"]["value"]}


@pytest.fixture(scope="module")
def client(instance: dict[str, Any]) -> OpenAI:
    return OpenAI(base_url=instance["base"] + "/v1", api_key=instance["token"], max_retries=0, timeout=120)


class Answer(Protocol):
    """An HTTP response, from httpx or from the SDK's own HTTP client."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def assert_openai_error(response: Answer, status_class: int = 4) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` with a 4xx (or the given class) status."""
    assert response.status_code // 100 == status_class, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error, dict) and ERROR_KEYS <= set(error) and error["message"], error
    return error


def test_models_lists_both(client: OpenAI) -> None:
    assert sorted(m.id for m in client.models.list().data) == sorted([CHAT, EMBED])


def test_tool_call_required(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=96, temperature=0, stop=ONE_CALL,
    )
    calls = answer.choices[0].message.tool_calls
    assert calls, answer
    function = calls[0].function  # type: ignore[union-attr]
    assert function.name == "get_weather" and calls[0].id
    arguments = json.loads(function.arguments)
    assert isinstance(arguments, dict) and set(arguments) == {"city"} and isinstance(arguments["city"], str)
    assert len(arguments["city"]) <= 24  # the schema's maxLength: the grammar came from the request's tools
    assert answer.choices[0].finish_reason == "tool_calls"
    # Offering tools does not stop a plain answer: "auto" leaves the choice to the model.
    plain = client.chat.completions.create(model=CHAT, messages=ASK_WEATHER[:1], tools=[WEATHER], max_tokens=16, temperature=0)
    assert plain.choices[0].message.content or plain.choices[0].message.tool_calls


def test_tool_call_streams_in_deltas(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=CHAT, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=96, temperature=0, stop=ONE_CALL,
        stream=True,
    ))
    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) >= 2, chunks  # the name first, the arguments in pieces after it
    assert {d.index for d in deltas} == {0}
    assert "".join(d.function.name or "" for d in deltas if d.function) == "get_weather"
    arguments = json.loads("".join(d.function.arguments or "" for d in deltas if d.function))
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str)


def test_response_format_json_schema(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}], max_tokens=96, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    person = json.loads(answer.choices[0].message.content or "")
    assert set(person) == {"name", "age"} and isinstance(person["name"], str) and len(person["name"]) <= 24
    assert isinstance(person["age"], int) and 0 <= person["age"] <= 150


def test_embeddings(client: OpenAI) -> None:
    result = client.embeddings.create(model=EMBED, input=["The cat sat on the mat.", "Stock markets fell sharply."])
    assert [item.index for item in result.data] == [0, 1] and result.model == EMBED
    first, second = (item.embedding for item in result.data)
    assert len(first) == len(second) == DIMENSION
    assert first != second and any(value != 0 for value in first)
    assert result.usage.prompt_tokens > 0


def test_each_model_refuses_the_other_kind_of_request(client: OpenAI) -> None:
    """Refused by the gateway: llama-server itself would chat on an embedder, and 501 the reverse."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=CHAT, input=["hello"])
    assert assert_openai_error(caught.value.response)["code"] == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert assert_openai_error(refused.value.response)["code"] == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as legacy:
        client.completions.create(model=EMBED, prompt="Hi", max_tokens=4)
    assert assert_openai_error(legacy.value.response)["code"] == "model_not_supported"


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/nope"), ("GET", "/v1/chat/completions"), ("GET", "/v2/x")])
def test_unknown_paths_are_openai_404s(instance: dict[str, Any], method: str, path: str) -> None:
    response = httpx.request(method, instance["base"] + path, headers={"Authorization": f"Bearer {instance['token']}"},
                             json={} if method == "POST" else None, timeout=30)
    assert response.status_code == 404, response.text
    assert_openai_error(response)
