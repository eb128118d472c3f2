"""A streaming load generator for OpenAI-style servers: N concurrent clients, SSE parsed at the client.

The same code drives AI Core and llama.cpp's `llama-server` (scripts/bench_concurrency.py). Every
request carries a distinct prompt (a run-wide counter leads it, so no two share even a prefix
beyond the first characters), `ignore_eos` so every answer is exactly `max_tokens` long, and
`stream_options.include_usage`, so an answer counts only when the server reports all its tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Optional

import httpx

TOPICS = ("a lighthouse keeper", "a river in spring", "an old clockmaker", "a city at night", "a mountain road",
          "a small bakery", "the first snow", "a lost letter")
_COUNTER = itertools.count()


@dataclass
class Outcome:
    """One request as the client saw it. `error` is None when every token arrived."""

    ttft_s: Optional[float] = None
    sent_s: float = 0.0  # when it was sent, from the start of its load
    completion_tokens: int = 0
    status: Optional[int] = None
    error: Optional[str] = None
    text: str = ""  # the answer as streamed
    cache: Optional[str] = None  # AI Core's X-Cache header (HIT / MISS), None when absent
    usage: Optional[dict] = None
    timings: Optional[dict] = None  # llama-server's `timings` (prompt_n prefilled, cache_n reused)


@dataclass
class LoadResult:
    clients: int
    max_tokens: int
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def served(self) -> int:
        return sum(o.error is None for o in self.outcomes)

    @property
    def refused_503(self) -> int:
        return sum(o.status == 503 for o in self.outcomes)

    @property
    def other_errors(self) -> int:
        return sum(o.error is not None and o.status != 503 for o in self.outcomes)

    @property
    def tokens_per_s(self) -> float:
        return sum(o.completion_tokens for o in self.outcomes if o.error is None) / self.wall_s

    def ttft(self, pct: float) -> Optional[float]:
        return percentile([o.ttft_s for o in self.outcomes if o.error is None and o.ttft_s is not None], pct)

    def summary(self) -> dict:
        return {"clients": self.clients, "requests": len(self.outcomes), "max_tokens": self.max_tokens,
                "wall_s": self.wall_s, "tokens_per_s": self.tokens_per_s, "served": self.served,
                "refused_503": self.refused_503, "other_errors": self.other_errors,
                "ttft_p50_s": self.ttft(50), "ttft_p99_s": self.ttft(99),
                # every request, in order sent: [sent at, TTFT] in seconds (where an outlier sits)
                "sent_and_ttft_s": sorted(([round(o.sent_s, 3), o.ttft_s and round(o.ttft_s, 3)]
                                           for o in self.outcomes), key=lambda pair: pair[0]),
                "errors": sorted({o.error for o in self.outcomes if o.error})[:10]}


def percentile(values: list[float], pct: float) -> Optional[float]:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def request_body(kind: str, model: str, max_tokens: int, temperature: float) -> dict:
    """A body with a prompt no other request of this run has."""
    n = next(_COUNTER)
    text = f"{n}. Write a story about {TOPICS[n % len(TOPICS)]}."
    body = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    if kind == "chat":
        return {**body, "messages": [{"role": "user", "content": text}]}
    return {**body, "prompt": text}


def _chunk_text(event: dict) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


async def one_stream(client: httpx.AsyncClient, path: str, body: dict, exact: bool = True) -> Outcome:
    """One streamed request: complete when it has `max_tokens` tokens (`exact`, for `ignore_eos`
    bodies) or, with `exact=False`, 1 to `max_tokens` (an answer that may stop early)."""
    outcome, usage, parts = Outcome(), None, []
    started = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body) as response:
            outcome.status = response.status_code
            outcome.cache = response.headers.get("x-cache")
            if response.status_code != 200:
                await response.aread()
                outcome.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return outcome
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    outcome.error = f"stream error: {json.dumps(event['error'])[:200]}"
                    return outcome
                text = _chunk_text(event)
                if outcome.ttft_s is None and text:
                    outcome.ttft_s = time.perf_counter() - started
                parts.append(text)
                usage = event.get("usage") or usage
                outcome.timings = event.get("timings") or outcome.timings
    except httpx.HTTPError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
        return outcome
    outcome.text, outcome.usage = "".join(parts), usage
    outcome.completion_tokens = (usage or {}).get("completion_tokens", 0)
    tokens, wanted = outcome.completion_tokens, body["max_tokens"]
    if not (tokens == wanted if exact else 0 < tokens <= wanted):
        outcome.error = f"incomplete: {outcome.completion_tokens} of {body['max_tokens']} tokens (usage {usage})"
    return outcome


async def _run(base_url: str, headers: dict, kind: str, model: str, clients: int, requests: int,
               max_tokens: int, temperature: float) -> LoadResult:
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    bodies = [request_body(kind, model, max_tokens, temperature) for _ in range(requests)]
    queue = iter(bodies)
    outcomes: list[Outcome] = []
    # A fresh connection per request: llama-server (cpp-httplib) closes a kept-alive connection
    # after a few requests, and a request sent on it just then fails without an answer.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    timeout = httpx.Timeout(900, connect=60)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, limits=limits) as client:
        async def worker() -> None:
            for body in queue:  # one shared iterator: each body goes to exactly one worker
                sent = time.perf_counter() - started
                outcome = await one_stream(client, path, body)
                outcome.sent_s = sent
                outcomes.append(outcome)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return LoadResult(clients=clients, max_tokens=max_tokens, wall_s=wall, outcomes=outcomes)


def run_load(base_url: str, headers: dict, kind: str, model: str, clients: int, requests: int,
             max_tokens: int, temperature: float = 0.0) -> LoadResult:
    """`requests` streams through `clients` concurrent connections, each taking the next as it finishes."""
    return asyncio.run(_run(base_url, headers, kind, model, clients, requests, max_tokens, temperature))
