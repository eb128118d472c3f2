"""Strict SSE framing check used by the streaming tests."""

import json


def parse_sse(body: str) -> list:
    """Every event is exactly `data: <payload>` followed by a blank line; returns payloads.

    JSON payloads are decoded; the terminator stays the string "[DONE]".
    """
    assert body.endswith("\n\n"), f"stream does not end with a blank line: {body[-80:]!r}"
    events = []
    for block in body[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, f"bad SSE block: {block!r}"
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]", "stream must end with exactly one [DONE]"
    return events[:-1]
