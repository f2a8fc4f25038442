"""``inferd chat INSTANCE_ID``: a streaming chat through the instance's own endpoint.

It talks to the data plane as any OpenAI client would (``POST /v1/chat/completions`` with
``stream: true``, read as server-sent events), so it shows what users of the instance get: the
public endpoint when enabled, else the private one over TLS checked against the instance's CA.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer

from inferd.cli.client import sse
from inferd.cli.client.http import ApiClient, describe_transport
from inferd.cli.client.session import Session, client_command, fail, say

EXIT_COMMANDS = ("/exit", "/quit")


class PinnedTransport(httpx.HTTPTransport):
    """Connect some host names to fixed addresses, like ``curl --resolve``, while SNI, the
    certificate check and the Host header keep the name: a private endpoint's certificate is
    chosen by SNI, so an address alone cannot reach it."""

    def __init__(self, pins: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pins = pins

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        address = self.pins.get(host) or ("127.0.0.1" if host == "localhost" or host.endswith(".localhost") else None)
        if address:  # RFC 6761: *.localhost is loopback, even where the resolver does not know it
            request.extensions = {**request.extensions, "sni_hostname": host}
            request.url = request.url.copy_with(host=address)
        return super().handle_request(request)


def parse_pins(values: list[str]) -> dict[str, str]:
    pins = {}
    for value in values:
        host, sep, address = value.partition(":")  # host names hold no colon; IPv6 addresses may
        if not sep or not host or not address:
            fail(f"--resolve {value!r}: expected HOST:ADDRESS")
        pins[host] = address
    return pins


@dataclass
class Conversation:
    """One chat with its history; each ``ask`` streams the answer and keeps it for the next turn."""

    http: httpx.Client
    url: str
    token: str
    model: str
    max_tokens: int
    messages: list[dict[str, str]] = field(default_factory=list)

    def ask(self, text: str) -> Iterator[str]:
        self.messages.append({"role": "user", "content": text})
        body = {"model": self.model, "messages": self.messages, "stream": True, "max_tokens": self.max_tokens}
        answer = ""
        try:
            with self.http.stream("POST", self.url, json=body, headers={"Authorization": f"Bearer {self.token}"}) as response:
                if response.status_code >= 400:
                    response.read()
                    fail(f"HTTP {response.status_code} from {self.url}: {_openai_error(response)}")
                for chunk in sse.chunks(response.iter_lines()):
                    if "error" in chunk:
                        fail(f"the model server failed mid-answer: {(chunk['error'] or {}).get('message')}")
                    piece = sse.delta_text(chunk)
                    answer += piece
                    yield piece
        except httpx.TransportError as exc:
            self.messages.pop()
            fail(describe_transport(self.url, exc))
        self.messages.append({"role": "assistant", "content": answer})


def _openai_error(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or error)
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase


def endpoint_of(instance: dict[str, Any], private: bool) -> tuple[str, bool]:
    """The base URL to use and whether it is the private one (which needs the instance's CA)."""
    endpoints = instance.get("endpoints") or {}
    public = endpoints.get("public_endpoint_fqdn")
    if public and not private and (instance.get("spec") or {}).get("enable_public_endpoint", True):
        return str(public).rstrip("/"), False
    if not endpoints.get("private_endpoint_fqdn"):
        fail("the instance has no endpoint yet")
    return str(endpoints["private_endpoint_fqdn"]).rstrip("/"), True


def data_plane_token(api: ApiClient, instance_id: str, given: str | None) -> str:
    """The token given, else a new one made for this chat, with a note saying how to revoke it."""
    if given:
        return given
    name = "inferd-chat-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    token = api.create_token(instance_id, name)
    say(f"created token {name} ({token['id']}) for this chat; revoke it with: "
        f"inferd di tokens revoke {instance_id} {token['id']}  (or pass --token-di / INFERD_DI_TOKEN)")
    return str(token["value"])


def _interactive(conversation: Conversation) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    say(f"chatting with {conversation.model}; /exit or Ctrl-D quits")
    while True:
        try:
            text = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            print()
            return
        if text.strip() in EXIT_COMMANDS:
            return
        if not text.strip():
            continue
        _print_answer(conversation, text)


def _print_answer(conversation: Conversation, text: str) -> None:
    """Each piece as it streams in, then a newline."""
    for piece in conversation.ask(text):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@client_command(output=False)
def chat(
    session: Session,
    instance_id: Annotated[str, typer.Argument(help="Instance id.", show_default=False)],
    message: Annotated[str | None, typer.Option("--message", "-m", help="Ask one question, stream the answer, exit.")] = None,
    token_di: Annotated[str | None, typer.Option("--token-di", envvar="INFERD_DI_TOKEN", show_envvar=False,
                                                 help="The instance's di_ token (env INFERD_DI_TOKEN; default: create one).")] = None,
    model: Annotated[str | None, typer.Option(help="Model slug (default: the instance's first model).")] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 512,
    private: Annotated[bool, typer.Option("--private", help="Use the private endpoint even if a public one exists.")] = False,
    resolve: Annotated[list[str] | None, typer.Option("--resolve", help="HOST:ADDRESS to connect to for HOST (repeatable; "
                                                      "*.localhost goes to 127.0.0.1 anyway).")] = None,
) -> None:
    """Chat with an instance's model through its endpoint, streaming the answers."""
    instance = session.api.instance(instance_id)
    base, is_private = endpoint_of(instance, private)
    verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=session.api.ca_pem(instance_id)) if is_private else True
    deployments = (instance.get("spec") or {}).get("model_deployments") or []
    chosen = model or next((d.get("model_slug") for d in deployments), None)
    if not chosen:
        fail("the instance deploys no model")
    token = data_plane_token(session.api, instance_id, token_di)
    transport = PinnedTransport(parse_pins(resolve or []), verify=verify)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(30, read=300)) as http:
        conversation = Conversation(http, f"{base}/v1/chat/completions", token, str(chosen), max_tokens)
        if system:
            conversation.messages.append({"role": "system", "content": system})
        if message is None:
            _interactive(conversation)
        else:
            _print_answer(conversation, message)
