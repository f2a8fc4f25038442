"""Token usage, as the engine itself counts it.

OpenAI-compatible engines (llama.cpp, vLLM) report ``usage`` (prompt and completion tokens) in
every non-streamed answer, and in a stream only when asked with
``stream_options.include_usage``: then one last event before ``data: [DONE]`` carries it, with
no choices. The gateway always asks (:func:`ask_for_usage`), so that every request is counted
from the engine's own numbers, and removes that event again (:class:`StreamUsage`) when the
client did not ask for it, so the client sees exactly the stream it asked for.

Only events that carry a usage object are parsed; every other event is passed on as bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = b"\n\n"
MAX_PENDING_BYTES = 1 << 20
"""An event longer than this without its blank line is passed on unparsed (never buffered more)."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_of(answer: Any) -> Usage | None:
    """The ``usage`` of a decoded answer or stream event, if it has a well-formed one."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return Usage(prompt, completion)


def usage_in_body(body: bytes) -> Usage | None:
    """The usage of a non-streamed answer (None: not JSON, or no usage in it)."""
    if not _USAGE.search(body):
        return None
    try:
        return usage_of(json.loads(body))
    except (ValueError, RecursionError):
        return None


def ask_for_usage(payload: dict[str, Any]) -> bool:
    """Make a streamed request ask for usage; True when the client asked for it already."""
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return True
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return False


class StreamUsage:
    """Follows one SSE stream: remembers its usage and, with ``strip``, hides it from the client.

    ``feed`` returns what may go to the client now. Whole events go at once; the bytes after
    the last complete event wait for the rest of that event (engines write whole events, so
    nothing normally waits).
    """

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self.usage: Usage | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(_EVENT_END)
        if end < 0:
            if len(data) > MAX_PENDING_BYTES:
                self._pending = b""
                return data
            self._pending = data
            return b""
        end += len(_EVENT_END)
        complete, self._pending = data[:end], data[end:]
        if not _USAGE.search(complete):
            return complete
        return b"".join(self._event(event + _EVENT_END) for event in complete[: -len(_EVENT_END)].split(_EVENT_END))

    def flush(self) -> bytes:
        """What is left at the end of the stream (an unterminated last event), unchanged."""
        rest, self._pending = self._pending, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        if not _USAGE.search(event):
            return event
        data = b"".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            return event
        usage = usage_of(decoded)
        if usage is None:
            return event
        self.usage = usage
        if not self.strip:
            return event
        if not decoded.get("choices"):
            return b""  # the usage-only event the client did not ask for
        del decoded["usage"]  # an engine that put usage on a content event: keep the content
        return b"data: " + json.dumps(decoded, separators=(",", ":")).encode() + _EVENT_END
