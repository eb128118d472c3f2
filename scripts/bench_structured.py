"""Constrained decoding side by side: 16 concurrent `json_schema` requests against AI Core and
against llama.cpp's own `llama-server`, and the same AI Core run unconstrained.

Both serve the packaged SmolLM2 GGUF of models.json with the same threads and per-sequence
context (scripts/bench_concurrency.py says how each is started). Each run: `--clients` concurrent
clients send `--requests` non-streamed /v1/chat/completions in all, each with its own prompt and
seed (temperature 0.7), `max_tokens` `--tokens`, the nested schema below (objects, arrays with
bounds, enums) as `response_format`. Aggregate tok/s = completion tokens (the servers' `usage`) /
wall time. Every constrained answer is parsed and validated with jsonschema (`valid` column).
llama-server also runs free, so its own constrained/free ratio is known.
AI Core runs free and constrained twice, alternately, so the ratio is not one minute's luck.

    .venv/bin/python -m scripts.bench_structured [--clients 16] [--requests 32] [--tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time

import httpx
import jsonschema

from deployments.config import load_models_file
from deployments.weights import resolve_weights
from scripts.bench_concurrency import KEY, MODEL, PARALLEL, machine
from scripts.llama_server import LlamaServer, ensure_binary
from scripts.serve_process import ROOT, ServeProcess

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["customer", "intent", "items", "urgency"],
    "properties": {
        "customer": {"type": "object", "additionalProperties": False, "required": ["name", "city"],
                     "properties": {"name": {"type": "string", "maxLength": 30},
                                    "city": {"type": "string", "maxLength": 30}}},
        "intent": {"enum": ["refund", "exchange", "question", "complaint"]},
        "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "additionalProperties": False, "required": ["product", "quantity"],
            "properties": {"product": {"type": "string", "maxLength": 30},
                           "quantity": {"type": "integer", "minimum": 1, "maximum": 20}}}},
        "urgency": {"enum": ["low", "medium", "high"]},
    },
}
PRODUCTS = ["kettle", "lamp", "chair", "phone case", "teapot", "blanket", "bicycle bell", "mug"]
CITIES = ["Berlin", "Lyon", "Porto", "Oslo", "Turin", "Ghent", "Cork", "Graz"]


def prompt(i: int) -> str:
    return (f"Customer email #{i} from {CITIES[i % 8]}: 'I ordered {1 + i % 4} {PRODUCTS[i % 8]} and "
            f"{1 + i % 3} {PRODUCTS[(i + 3) % 8]}, one arrived broken. Please help.' Extract it as JSON.")


def body(i: int, tokens: int, constrained: bool) -> dict:
    request = {"model": MODEL, "messages": [{"role": "user", "content": prompt(i)}], "max_tokens": tokens,
               "temperature": 0.7, "seed": i}
    if constrained:
        request["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
    return request


async def _run(base_url: str, headers: dict, clients: int, requests: int, tokens: int, constrained: bool) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    outcome = {"tokens": 0, "served": 0, "valid": 0, "errors": []}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            r = await http.post("/v1/chat/completions", json=body(i, tokens, constrained))
            if r.status_code != 200:
                outcome["errors"].append(f"{r.status_code} {r.text[:200]}")
                continue
            answer = r.json()
            outcome["served"] += 1
            outcome["tokens"] += answer["usage"]["completion_tokens"]
            if constrained:
                try:
                    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), SCHEMA)
                    outcome["valid"] += 1
                except (ValueError, jsonschema.ValidationError):
                    pass

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as http:
        await http.post("/v1/chat/completions", json=body(999, 16, constrained))  # warm-up (and grammar cache)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        outcome["seconds"] = time.perf_counter() - started
    outcome["tok_s"] = outcome["tokens"] / outcome["seconds"]
    return outcome


def run(base_url: str, headers: dict, args, constrained: bool, label: str) -> dict:
    result = asyncio.run(_run(base_url, headers, args.clients, args.requests, args.tokens, constrained))
    print(f"{label}: {result['tok_s']:.1f} tok/s, {result['served']}/{args.requests} served, "
          f"{result['valid']} valid, {len(result['errors'])} errors {result['errors'][:2]}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    config = load_models_file(ROOT / "models.json").models[MODEL]
    gguf = resolve_weights(config.path, ROOT / "models")
    command = [os.path.relpath(sys.executable, ROOT), "-m", "scripts.bench_structured", *sys.argv[1:]]
    print(f"{shlex.join(command)}; {machine()}", file=sys.stderr)
    ensure_binary()
    with LlamaServer(gguf, threads=len(os.sched_getaffinity(0)), parallel=PARALLEL,
                     context_per_sequence=config.context_length) as llama:
        theirs_free = run(llama.base_url, {}, args, False, "llama-server free")
        theirs = run(llama.base_url, {}, args, True, "llama-server json_schema")
    ours: dict = {"free": [], "json": []}
    with ServeProcess(env={"API_KEYS": KEY, "CACHE_ENABLED": "false"}) as server:
        headers = {"X-API-Key": KEY}
        for _ in range(2):
            ours["free"].append(run(server.base_url, headers, args, False, "AI Core free"))
            ours["json"].append(run(server.base_url, headers, args, True, "AI Core json_schema"))
    free = sum(r["tok_s"] for r in ours["free"]) / 2
    constrained = sum(r["tok_s"] for r in ours["json"]) / 2
    valid = sum(r["valid"] for r in ours["json"])
    print(f"| run | tok/s | valid |\n|---|---|---|\n"
          f"| llama-server free | {theirs_free['tok_s']:.1f} | - |\n"
          f"| llama-server json_schema | {theirs['tok_s']:.1f} | {theirs['valid']}/{theirs['served']} |\n"
          f"| AI Core free (mean of 2) | {free:.1f} | - |\n"
          f"| AI Core json_schema (mean of 2) | {constrained:.1f} | {valid}/{2 * args.requests} |\n\n"
          f"AI Core constrained / AI Core free = {constrained / free:.2f}; "
          f"AI Core constrained / llama-server constrained = {constrained / theirs['tok_s']:.2f}; "
          f"llama-server constrained / llama-server free = {theirs['tok_s'] / theirs_free['tok_s']:.2f}")


if __name__ == "__main__":
    main()
