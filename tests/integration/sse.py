"""Strict SSE framing check used by the streaming tests, and a stream on a thread."""

import json
import threading
import time

import httpx


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


def stream_in_thread(base_url: str, key: str, model: str, max_tokens: int, out: dict):
    """Start a greedy streamed completion on a thread and return it once the first bytes arrived.

    `out` gets `status`, `first_at`, and when the stream ends its parsed `events` and `ended_at`
    (time.monotonic()), so a test can order the stream's end against something else."""
    def run():
        body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True,
                "ignore_eos": True, "temperature": 0}
        with httpx.stream("POST", base_url + "/v1/completions", json=body, headers={"X-API-Key": key},
                          timeout=600) as r:
            out["status"], text = r.status_code, ""
            for piece in r.iter_text():
                text += piece
                out.setdefault("first_at", time.monotonic())
            out["events"] = parse_sse(text)
            out["ended_at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(1200):  # bounded wait for the first streamed bytes
        if "first_at" in out or not thread.is_alive():
            break
        time.sleep(0.05)
    assert "first_at" in out, out
    return thread


def disconnect_mid_stream(client: httpx.Client, figures) -> dict:
    """Open a long streamed completion, close the connection after three events, and return the
    model's figures (`figures()`: its entry of /api/v1/models) once the replica counted it cancelled."""
    before = figures()["cancelled"]
    body = {"prompt": "Count forever:", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received >= 3:
                break  # leaving the block closes the connection mid-stream
    for _ in range(300):  # bounded wait for the replica to notice; a full run would not count as cancelled
        now = figures()
        if now["cancelled"] > before and now["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert now["cancelled"] == before + 1 and now["in_flight"] == 0
    return now
