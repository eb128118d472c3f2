"""Update drill: streams and a steady request rate while `scripts.deploy` applies two updates.

    MODEL_CONFIG_PATH=/tmp/drill/models.json API_KEYS=$KEY scripts/serve.sh    # shell 1
    MODEL_CONFIG_PATH=/tmp/drill/models.json python -m scripts.update_drill \
        --key $KEY --model smollm2-135m-instruct --nginx                        # shell 2

While `--streams` clients stream chat completions (each a new one as soon as the last ended) and
`--rate` non-streaming requests start per second, it applies (1) a changed entry of the models
file (its `description`: the model's replicas are replaced, nothing else) and (2) a new code
revision (`scripts.deploy --code-revision`, what a changed serve_app/ or deployments/ does: the
whole app is rebuilt, replica by replica). It counts, per target (the server directly and, with
`--nginx`, the shipped configs/nginx.conf in front of it), failed requests (no 200, or a
non-streaming answer without its choice) and broken streams (a 200 stream that carried an error
event or ended before its last token and usage). Exit status 0 when both counts are 0.

The models file is edited in place (its `description` gains a marker): give it a copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import httpx
import yaml

from scripts.run_server import ROOT, server_env
from scripts.stream_load import Outcome, one_stream, request_body


@dataclass
class Target:
    name: str
    base_url: str
    verify: object = True
    streams_ok: int = 0
    broken_streams: list[str] = field(default_factory=list)
    requests_ok: int = 0
    failed_requests: list[str] = field(default_factory=list)

    def count_stream(self, outcome: Outcome) -> None:
        if outcome.error is None:
            self.streams_ok += 1
        elif outcome.status == 200:  # the answer had started: the stream was cut or carried an error
            self.broken_streams.append(outcome.error)
        else:
            self.failed_requests.append(f"stream: {outcome.error}")

    def summary(self) -> dict:
        return {"streams_ok": self.streams_ok, "broken_streams": len(self.broken_streams),
                "requests_ok": self.requests_ok, "failed_requests": len(self.failed_requests),
                "errors": sorted(set(self.broken_streams + self.failed_requests))[:10]}


@dataclass
class Drill:
    """What a drill needs to reach the server and to update it."""

    targets: list[Target]
    key: str
    model: str
    models_file: Path
    deploy_args: list[str]  # e.g. --config, --address
    env: dict
    streams: int = 16
    rate: float = 2.0
    max_tokens: int = 24
    warmup_s: float = 5.0
    tail_s: float = 10.0
    events: list[dict] = field(default_factory=list)
    in_flight: int = 0

    def log(self, what: str, **extra) -> None:
        event = {"t": round(time.monotonic() - self.started, 1), "event": what, "in_flight_streams": self.in_flight,
                 **extra}
        self.events.append(event)
        print(json.dumps(event), file=sys.stderr, flush=True)


def _client(target: Target, key: str) -> httpx.AsyncClient:
    # A fresh connection per request, as stream_load does: each request meets the server as it is now.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=target.base_url, headers={"X-API-Key": key}, verify=target.verify,
                             timeout=httpx.Timeout(600, connect=30), limits=limits)


async def _stream_worker(drill: Drill, target: Target, stop: asyncio.Event) -> None:
    async with _client(target, drill.key) as client:
        while not stop.is_set():
            drill.in_flight += 1
            try:
                outcome = await one_stream(client, "/v1/chat/completions",
                                           request_body("chat", drill.model, drill.max_tokens, 0.0))
            finally:
                drill.in_flight -= 1
            target.count_stream(outcome)


async def _one_request(client: httpx.AsyncClient, drill: Drill, target: Target) -> None:
    body = {"model": drill.model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}
    try:
        r = await client.post("/v1/chat/completions", json=body)
        if r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None:
            target.requests_ok += 1
            return
        target.failed_requests.append(f"HTTP {r.status_code}: {r.text[:200]}")
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        target.failed_requests.append(f"{type(exc).__name__}: {exc}"[:200])


async def _request_driver(drill: Drill, target: Target, stop: asyncio.Event) -> None:
    """`rate` requests per second, each on its own task (a slow answer does not slow the rate)."""
    async with _client(target, drill.key) as client:
        tasks: set[asyncio.Task] = set()
        while not stop.is_set():
            task = asyncio.create_task(_one_request(client, drill, target))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            try:
                await asyncio.wait_for(stop.wait(), 1 / drill.rate)
            except asyncio.TimeoutError:
                pass
        await asyncio.gather(*tasks)


def _model_entry(drill: Drill) -> Optional[dict]:
    target = drill.targets[0]
    try:
        listing = httpx.get(target.base_url + "/api/v1/models", headers={"X-API-Key": drill.key},
                            verify=target.verify, timeout=30).json()
        return next(m for m in listing["models"] if m["name"] == drill.model)
    except (httpx.HTTPError, ValueError, KeyError, StopIteration):
        return None


def _serve_settled(drill: Drill) -> bool:
    """`serve status`: the application RUNNING and every deployment HEALTHY."""
    address = drill.deploy_args[drill.deploy_args.index("--address") + 1] if "--address" in drill.deploy_args else None
    serve = Path(sys.executable).parent / "serve"
    done = subprocess.run([str(serve), "status", *(["--address", address] if address else [])],
                          env=drill.env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return False
    apps = (yaml.safe_load(done.stdout) or {}).get("applications") or {}
    return bool(apps) and all(
        app.get("status") == "RUNNING"
        and all(d.get("status") == "HEALTHY" for d in (app.get("deployments") or {}).values())
        for app in apps.values())


async def _until(check, what: str, polls: int = 600) -> None:
    for _ in range(polls):  # bounded: `polls` checks, a second apart
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(1)
    raise RuntimeError(f"update drill: {what} did not happen")


async def _deploy(drill: Drill, extra: list[str]) -> None:
    command = [sys.executable, "-m", "scripts.deploy", *drill.deploy_args, *extra]
    done = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, env=drill.env, capture_output=True,
                                   text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"scripts.deploy failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


async def _updates(drill: Drill) -> None:
    before = await asyncio.to_thread(_model_entry, drill)
    if before is None:
        raise RuntimeError(f"model {drill.model!r} is not listed by {drill.targets[0].base_url}")
    # 1. A changed models.json entry: only this model's replicas are replaced.
    marker = f"update drill {int(time.time())}"
    data = json.loads(drill.models_file.read_text())
    entry = data["models"][drill.model]
    entry["description"] = f"{entry.get('description', '').split(' [update drill')[0]} [{marker}]"
    drill.models_file.write_text(json.dumps(data, indent=2))
    drill.log("deploy 1: changed models.json entry")
    await _deploy(drill, [])
    await _until(lambda: (e := _model_entry(drill)) is not None and marker in e.get("description", "")
                 and e["state"] == "ready" and e["pid"] != before["pid"], "the changed entry's new replica")
    await _until(lambda: _serve_settled(drill), "the application settling after deploy 1")
    drill.log("deploy 1 applied")
    # 2. A new code revision: the whole app is rebuilt, replica by replica.
    middle = await asyncio.to_thread(_model_entry, drill)
    drill.log("deploy 2: new code revision")
    await _deploy(drill, ["--code-revision", f"drill-{int(time.time())}"])
    await _until(lambda: (e := _model_entry(drill)) is not None and e["state"] == "ready"
                 and e["pid"] != middle["pid"], "the rebuilt app's model replica")
    await _until(lambda: _serve_settled(drill), "the application settling after deploy 2")
    drill.log("deploy 2 applied")


async def run_drill_async(drill: Drill) -> dict:
    drill.started = time.monotonic()
    stop = asyncio.Event()
    workers = [asyncio.create_task(_stream_worker(drill, drill.targets[i % len(drill.targets)], stop))
               for i in range(drill.streams)]
    workers += [asyncio.create_task(_request_driver(drill, target, stop)) for target in drill.targets]
    error = None
    try:
        await asyncio.sleep(drill.warmup_s)
        await _updates(drill)
        await asyncio.sleep(drill.tail_s)
    except Exception as exc:  # the updates failed: still count what the clients saw
        error = str(exc)
    finally:
        stop.set()
        drill.log("load stopping: in-flight requests finish")
        await asyncio.gather(*workers)
    return {"error": error, "streams": drill.streams, "rate_per_target": drill.rate, "max_tokens": drill.max_tokens,
            "events": drill.events, "targets": {t.name: t.summary() for t in drill.targets}}


def run_drill(drill: Drill) -> dict:
    return asyncio.run(run_drill_async(drill))


@contextmanager
def nginx_in_front(upstream: str) -> Iterator[Target]:
    """The shipped configs/nginx.conf (TLS, self-signed) in front of `upstream`, on loopback ports."""
    from scripts.serve_process import free_port
    from tests.deploy.nginx import render, self_signed_cert

    with tempfile.TemporaryDirectory(prefix="aicore-drill-nginx-") as folder:
        certs = self_signed_cert(Path(folder) / "certs")
        https_port = free_port()
        conf = render(Path(folder), certs, http_port=free_port(), https_port=https_port, upstream=upstream)
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        target = Target("nginx", f"https://127.0.0.1:{https_port}",
                        ssl.create_default_context(cafile=str(certs / "fullchain.pem")))
        try:
            for _ in range(100):
                if proc.poll() is not None:
                    raise RuntimeError("nginx exited: " + proc.stderr.read().decode())
                try:
                    httpx.get(target.base_url + "/api/v1/health", verify=target.verify, timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield target
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('API_PORT', '8000')}")
    parser.add_argument("--key", default=os.environ.get("API_KEYS", "").split(",")[0].split(":")[0])
    parser.add_argument("--model", required=True, help="A generation model of the models file: streamed and changed.")
    parser.add_argument("--models-file", type=Path, default=Path(os.environ.get("MODEL_CONFIG_PATH", "models.json")),
                        help="The server's models file (MODEL_CONFIG_PATH): edited in place.")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"))
    parser.add_argument("--nginx", action="store_true", help="Also drive the load through the shipped nginx.conf.")
    parser.add_argument("--streams", type=int, default=16, help="Streaming clients, shared out over the targets.")
    parser.add_argument("--rate", type=float, default=2.0, help="Non-streaming requests per second, per target.")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--tail-s", type=float, default=10.0)
    options = parser.parse_args(argv)
    env = server_env({"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
                      "MODEL_CONFIG_PATH": str(options.models_file.resolve())})
    direct = Target("direct", options.url)

    def drill(targets: list[Target]) -> dict:
        return run_drill(Drill(targets, options.key, options.model, options.models_file.resolve(),
                               ["--config", str(options.config), "--address", options.address], env,
                               options.streams, options.rate, options.max_tokens, options.warmup_s, options.tail_s))

    if options.nginx:
        with nginx_in_front(options.url) as through_nginx:
            result = drill([direct, through_nginx])
    else:
        result = drill([direct])
    print(json.dumps(result, indent=2))
    failed = result["error"] or any(t["broken_streams"] or t["failed_requests"] for t in result["targets"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
