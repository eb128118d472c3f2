"""A flood of unauthenticated WebSockets: `/api/v1/health` p50 idle and under
the flood, and the memory (RSS) of Ray's HTTP proxy and of the ingress replica before and during it.

The flood (a child process, so the health client's latencies are its own): `--workers` sockets at
a time, each reconnecting as soon as the server closes it, spread over `--addresses` loopback
source addresses (127.0.0.2 onwards: each counts as its own client), in three kinds: a first
message of `--big-messages` chat messages (the issue's attack: ~7 MB, over WS_MAX_FRAME_BYTES),
one of ~`--mid-bytes` (under the proxy's limit, over WS_AUTH_FRAME_BYTES), and sockets that never
send. Health is asked one request at a time, idle and then during the flood. The flood process
runs at nice 19 (--flood-nice): an attacker's CPU is on its own machine, and on a small one
shared with the server the flood's own client work would otherwise be what is measured.

    .venv/bin/python -m scripts.bench_ws_flood [--workers 200] [--addresses 50] [--seconds 20] [--redis]
    .venv/bin/python -m scripts.bench_ws_flood --url http://127.0.0.1:8000 --server-pid <pid of serve run>

Without --url it starts the app as the tests do (scripts.serve_process: the environment of
scripts.run_server, SmolLM2 only, default settings) and stops it at the end; every run ends by
itself after --seconds of flood. Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Optional

MODEL = "smollm2-135m-instruct"


def _chat(messages: int) -> str:
    return json.dumps({"type": "chat", "id": "flood", "model": MODEL, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}] * messages})


async def _flood(ws_url: str, workers: int, addresses: int, seconds: float, big: str, mid: str) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    stop = time.monotonic() + seconds
    outcomes: Counter = Counter()

    async def worker(index: int) -> None:
        source = f"127.0.0.{2 + index % addresses}"
        kind = ("big", "mid", "silent")[index % 3]
        while time.monotonic() < stop:
            try:
                async with connect(ws_url, local_addr=(source, 0), compression=None, max_size=None,
                                   open_timeout=30, close_timeout=2, ping_interval=None) as ws:
                    try:
                        if kind != "silent":
                            await ws.send(big if kind == "big" else mid)
                        while True:
                            await asyncio.wait_for(ws.recv(), max(0.1, stop - time.monotonic()))
                    except ConnectionClosed as closed:
                        outcomes[f"{kind}: closed {closed.rcvd.code if closed.rcvd else 'without a code'}"] += 1
                    except asyncio.TimeoutError:
                        outcomes[f"{kind}: still open at the end"] += 1
            except Exception as error:  # refused at the handshake, reset while sending, ...
                outcomes[f"{kind}: {type(error).__name__}"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return dict(outcomes)


def _flood_process(ws_url, workers, addresses, seconds, big_messages, mid_bytes, nice, results) -> None:
    import os

    os.nice(nice)  # the attacker's CPU is not the server's: on one machine, it yields to the server
    big = _chat(big_messages)
    mid = _chat(max(1, mid_bytes // len(json.dumps({"role": "user", "content": "hi"}) + ", ")))
    results.put({"big_bytes": len(big), "mid_bytes": len(mid),
                 "outcomes": asyncio.run(_flood(ws_url, workers, addresses, seconds, big, mid))})


def _health_latencies(url: str, until: float, pause_s: float = 0.02, limit: int = 100000) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < until and len(latencies) < limit:
            started = time.perf_counter()
            r = client.get("/api/v1/health")
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            time.sleep(pause_s)
    return latencies


class RssSampler:
    """RSS of the processes whose command line holds a mark, under `root_pid`, every 0.1 s."""

    MARKS = {"proxy": "ProxyActor", "ingress": "ServeReplica:ai-core:ingress"}

    def __init__(self, root_pid: int):
        import psutil

        root = psutil.Process(root_pid)
        self.processes = {}
        for process in [root, *root.children(recursive=True)]:
            try:
                cmdline = " ".join(process.cmdline())
            except psutil.Error:
                continue
            for role, mark in self.MARKS.items():
                if mark in cmdline:
                    self.processes.setdefault(role, []).append(process)
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def now(self) -> dict[str, int]:
        totals = {}
        for role, processes in self.processes.items():
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except Exception:
                    pass
            totals[role] = total
        return totals

    def start(self) -> None:
        def run():
            while not self._stop.wait(0.1):
                for role, value in self.now().items():
                    self.peak[role] = max(self.peak.get(role, 0), value)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self.peak


def _models_file() -> Path:
    from scripts.serve_process import ROOT

    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    path = Path(tempfile.mkdtemp(prefix="aicore-wsflood-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(url: str, server_pid: int, args) -> dict:
    sampler = RssSampler(server_pid)
    idle = _health_latencies(url, time.monotonic() + args.idle_seconds)
    before = sampler.now()
    sampler.start()
    results = multiprocessing.get_context("spawn").Queue()
    flood = multiprocessing.get_context("spawn").Process(
        target=_flood_process, daemon=True,
        args=(url.replace("http://", "ws://", 1) + "/api/v1/ws", args.workers, args.addresses, args.seconds,
              args.big_messages, args.mid_bytes, args.flood_nice, results))
    flood.start()
    time.sleep(args.ramp_seconds)  # the flood's first sockets open
    under = _health_latencies(url, time.monotonic() + args.seconds - args.ramp_seconds)
    flooded = results.get(timeout=args.seconds + 120)
    flood.join(timeout=30)
    peak = sampler.stop()
    after = sampler.now()
    p50_idle, p50_flood = statistics.median(idle), statistics.median(under)
    return {
        "health_idle": {"n": len(idle), "p50_ms": round(p50_idle * 1000, 2), "p90_ms": round(_p(idle, 0.9) * 1000, 2),
                        "max_ms": round(max(idle) * 1000, 2)},
        "health_under_flood": {"n": len(under), "p50_ms": round(p50_flood * 1000, 2),
                               "p90_ms": round(_p(under, 0.9) * 1000, 2), "max_ms": round(max(under) * 1000, 2)},
        "p50_ratio": round(p50_flood / p50_idle, 2),
        "rss_mib": {role: {"before": round(before.get(role, 0) / 2**20, 1), "peak": round(peak.get(role, 0) / 2**20, 1),
                           "after": round(after.get(role, 0) / 2**20, 1)} for role in sampler.processes},
        "flood": {"workers": args.workers, "addresses": args.addresses, "seconds": args.seconds,
                  "nice": args.flood_nice, **flooded,
                  "sockets": sum(flooded["outcomes"].values())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (else one is started and stopped)")
    parser.add_argument("--server-pid", type=int, help="with --url: the `serve run` process (for RSS)")
    parser.add_argument("--workers", type=int, default=200, help="flood sockets at a time")
    parser.add_argument("--addresses", type=int, default=50, help="loopback source addresses (<= 250)")
    parser.add_argument("--seconds", type=float, default=20, help="how long the flood lasts")
    parser.add_argument("--ramp-seconds", type=float, default=2, help="flood time before health is sampled")
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle health sampling")
    parser.add_argument("--big-messages", type=int, default=200_000, help="messages in the big first frame")
    parser.add_argument("--mid-bytes", type=int, default=512 * 1024, help="size of the mid first frame")
    parser.add_argument("--flood-nice", type=int, default=19,
                        help="niceness of the flood process (19: it takes CPU the server leaves; 0: as much)")
    parser.add_argument("--redis", action="store_true", help="start a private redis-server and use REDIS_URL")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the started server")
    args = parser.parse_args()
    if not 1 <= args.addresses <= 250:
        parser.error("--addresses must be 1..250")
    if args.url:
        if not args.server_pid:
            parser.error("--url needs --server-pid (the RSS of its proxy is measured)")
        print(json.dumps(measure(args.url, args.server_pid, args), indent=2))
        return

    from scripts.serve_process import ServeProcess

    redis = None
    env = {"API_KEYS": "bench-ws-flood-bootstrap-key", **dict(item.split("=", 1) for item in args.env)}
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis = RedisProcess().start()
        env["REDIS_URL"] = redis.url
    server = ServeProcess(env=env, args={"model_config_path": str(_models_file())})
    try:
        server.start(ready_models=(MODEL,))
        result = measure(server.base_url, server.proc.pid, args)
    finally:
        server.stop()
        if redis:
            redis.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
