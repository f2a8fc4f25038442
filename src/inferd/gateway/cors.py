"""Cross-origin access to the instance endpoints, so that a page (the console's playground, a
team's own web app) can call an instance from a browser.

The endpoints authenticate with a bearer ``di_`` token that a page must be given explicitly;
no cookie or other ambient credential is ever honoured, so answering any origin (``*``, as
OpenAI's API does) lets a page do nothing it could not do without the browser. Operators who
want less list their origins (``INFERD_GATEWAY_CORS_ORIGINS``) or switch it off (empty).

Cost: a request without an ``Origin`` header (every SDK, curl, server-side client) pays one scan
of its header names and nothing else; only browser requests get their ``send`` wrapped.
"""

from __future__ import annotations

from collections.abc import Iterable

from inferd.gateway.answers import Headers, Message, Scope, Send

_PREFLIGHT_HEADERS: Headers = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    # "*" covers every request header but Authorization, which must be named.
    (b"access-control-allow-headers", b"authorization, *"),
    (b"access-control-max-age", b"600"),
    (b"content-length", b"0"),
]
_EXPOSED: tuple[bytes, bytes] = (b"access-control-expose-headers", b"*")


class CorsPolicy:
    """Which origins may call the endpoints: ``*`` for any, or an exact list."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = {o.strip().rstrip("/") for o in origins if o.strip()}
        self.any = "*" in listed
        self.origins = frozenset(o.encode("latin-1") for o in listed if o != "*")
        self.enabled = self.any or bool(self.origins)

    def allowed(self, origin: bytes) -> Headers | None:
        """The headers that let ``origin`` read an answer, or None when it may not."""
        if self.any:
            return [(b"access-control-allow-origin", b"*")]
        if origin in self.origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        return None


def origin_of(scope: Scope) -> tuple[bytes | None, bool]:
    """The request's ``Origin`` and whether it is a CORS preflight."""
    origin = None
    preflight = False
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value
        elif name == b"access-control-request-method":
            preflight = True
    return origin, preflight and scope["method"] == "OPTIONS"


async def answer_preflight(send: Send, allowed: Headers | None) -> None:
    """204 with the grant, or 204 without one (the browser then refuses the real request)."""
    headers = [*(allowed or []), *_PREFLIGHT_HEADERS] if allowed else [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def granting(send: Send, allowed: Headers) -> Send:
    """``send`` with the grant added to the response head."""
    extra = [*allowed, _EXPOSED]

    async def send_granted(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return send_granted

