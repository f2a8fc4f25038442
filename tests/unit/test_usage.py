"""Usage accounting from the engine's own ``usage``: asking for it in streams, finding it in
split SSE events, and hiding it from a client that did not ask."""

from __future__ import annotations

import json

from inferd.gateway.usage import StreamUsage, Usage, ask_for_usage, usage_in_body

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"object":"chat.completion.chunk"}\n\n'
USAGE_ONLY = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_asking_for_usage_keeps_the_clients_own_options() -> None:
    payload: dict[str, object] = {"stream": True}
    assert ask_for_usage(payload) is False
    assert payload["stream_options"] == {"include_usage": True}
    payload = {"stream": True, "stream_options": {"include_usage": False, "continuous_usage_stats": True}}
    assert ask_for_usage(payload) is False
    assert payload["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    payload = {"stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(payload) is True


def test_usage_event_is_counted_and_hidden_from_a_client_that_did_not_ask() -> None:
    follow = StreamUsage(strip=True)
    out = follow.feed(CONTENT) + follow.feed(CONTENT + USAGE_ONLY + DONE) + follow.flush()
    assert out == CONTENT + CONTENT + DONE
    assert follow.usage == Usage(7, 3) and follow.usage.total_tokens == 10


def test_usage_event_is_kept_for_a_client_that_asked() -> None:
    follow = StreamUsage(strip=False)
    stream = CONTENT + USAGE_ONLY + DONE
    assert follow.feed(stream) + follow.flush() == stream
    assert follow.usage == Usage(7, 3)


def test_events_split_anywhere_are_reassembled_byte_for_byte() -> None:
    stream = CONTENT * 3 + USAGE_ONLY + DONE
    for cut in range(1, len(stream)):
        follow = StreamUsage(strip=True)
        out = follow.feed(stream[:cut]) + follow.feed(stream[cut:]) + follow.flush()
        assert out == CONTENT * 3 + DONE, cut
        assert follow.usage == Usage(7, 3), cut


def test_usage_on_a_content_event_keeps_the_content() -> None:
    event = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 2, "completion_tokens": 5}}
    follow = StreamUsage(strip=True)
    out = follow.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    decoded = json.loads(out[len(b"data: "):])
    assert decoded == {"choices": event["choices"]}
    assert follow.usage == Usage(2, 5)


def test_null_or_malformed_usage_is_passed_on_and_not_counted() -> None:
    follow = StreamUsage(strip=True)
    stream = b'data: {"choices":[{"delta":{}}],"usage":null}\n\n' + b'data: {"usage": {"prompt_tokens": "x"}}\n\n'
    assert follow.feed(stream) == stream
    assert follow.usage is None


def test_an_unterminated_event_is_passed_on_at_the_end() -> None:
    follow = StreamUsage(strip=True)
    assert follow.feed(b"data: {\"partial\":") == b""
    assert follow.flush() == b"data: {\"partial\":"


def test_usage_of_a_whole_answer() -> None:
    body = json.dumps({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 11, "completion_tokens": 1}})
    assert usage_in_body(body.encode()) == Usage(11, 1)
    assert usage_in_body(b'{"choices": []}') is None
    assert usage_in_body(b"not json") is None
