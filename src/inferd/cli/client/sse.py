"""Server-sent events as the OpenAI streaming API sends them: ``data: {json}`` … ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def events(lines: Iterable[str]) -> Iterator[str]:
    """The data of each event: ``data:`` lines joined until a blank line; comments and other fields skipped."""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def chunks(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Each JSON chunk until ``[DONE]``; an ``error`` chunk is yielded too, for the caller to report."""
    for data in events(lines):
        if data.strip() == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        if isinstance(chunk, dict):
            yield chunk


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a chat-completion chunk adds (empty for role-only and usage chunks)."""
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
    return text
