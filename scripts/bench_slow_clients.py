"""What slow and large clients do directly against the API port (Ray's HTTP proxy).

Starts the server as README command one does (`scripts.serve_process`, one small embedding model,
no Redis), then, for each flood size, holds that many connections that send a request header a
byte at a time (each connection one byte every --drip-s seconds, never ending the header) and
measures meanwhile:
- GET /api/v1/health and an authenticated GET /v1/models: median and p95 over --requests each;
- the proxy actor's resident memory and open file descriptors, and how many flood connections
  the proxy still holds then and --hold-s seconds after the flood opened (with HEADER_TIMEOUT_S
  in the proxy: none past it; without, all).
Then one connection sends a single header of --big-header-mb MiB and the proxy's memory is read again.
`--proxy-fd-limit N` lowers the proxy actor's open-file limit to N once it runs (prlimit), so that
a flood larger than N shows what running out does.

    .venv/bin/python -m scripts.bench_slow_clients [--floods 200,2000] [--requests 50]

Only loopback traffic (flood connections leave from 127.0.0.2 and up); the server it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from scripts.serve_process import ROOT, ServeProcess

KEY = "bench-slow-clients-key-0123456789"
MODEL = "minilm-l6-v2-int8"


def _proxy_pid(server: ServeProcess) -> int:
    """This server's proxy actor (other servers may run on the machine), as its log names it."""
    for pid, port in re.findall(r"ProxyActor pid=(\d+)\).*?HTTP port: (\d+)", server.log()):
        if int(port) == server.port:
            return int(pid)
    raise RuntimeError(f"the proxy of port {server.port} is not in {server.log_path}")


def _proxy_state(pid: int) -> dict:
    status = (Path("/proc") / str(pid) / "status").read_text()
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    limits = (Path("/proc") / str(pid) / "limits").read_text()
    nofile = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "fd_limit": nofile}


async def _timed(client: httpx.AsyncClient, path: str, count: int, **kwargs) -> dict:
    times, statuses, failures = [], set(), 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            r = await client.get(path, **kwargs)
            statuses.add(r.status_code)
        except httpx.HTTPError as error:  # a refused or unanswered connection
            statuses.add(type(error).__name__)
            failures += 1
            if failures == 3:
                break
            continue
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    if not times:
        return {"statuses": sorted(map(str, statuses)), "failures": failures}
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "statuses": sorted(map(str, statuses)), "failures": failures}


async def _normal(base: str, count: int) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return {"health": await _timed(client, "/api/v1/health", count),
                "models": await _timed(client, "/v1/models", count, headers={"X-API-Key": KEY})}


async def _flood(port: int, count: int, drip_s: float):
    """`count` connections each sending `GET ... X-Slow: ` then a byte every `drip_s` (spread over the period)."""
    connections = []
    gate = asyncio.Semaphore(100)

    async def one(i: int):
        async with gate:
            source = f"127.0.0.{2 + i // 20000}"  # at most 20,000 per source address (its ephemeral ports)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            connections.append((reader, writer))

    await asyncio.gather(*(one(i) for i in range(count)))
    ended = [asyncio.create_task(reader.read(65536)) for reader, _ in connections]  # an answer, or the close

    async def drip():
        while True:
            for i, (_, writer) in enumerate(connections):
                if not writer.is_closing():
                    writer.write(b"a")
                if i % 100 == 99:
                    await asyncio.sleep(drip_s * 100 / len(connections))

    return connections, ended, asyncio.create_task(drip())


async def _big_header(port: int, megabytes: int, pid: int) -> dict:
    before = _proxy_state(pid)["rss_mb"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
    chunk = b"a" * 1048576
    sent = 0
    with contextlib.suppress(OSError):
        for _ in range(megabytes):
            writer.write(chunk)
            await writer.drain()
            sent += 1
    await asyncio.sleep(2)
    after = _proxy_state(pid)["rss_mb"]
    answered = b""
    with contextlib.suppress(asyncio.TimeoutError, OSError):
        answered = await asyncio.wait_for(reader.read(200), timeout=2)
    writer.close()
    await asyncio.sleep(2)
    return {"header_mib_sent": sent, "proxy_rss_mb_before": before, "proxy_rss_mb_holding": after,
            "proxy_rss_mb_after_close": _proxy_state(pid)["rss_mb"], "answer": answered[:40].decode("latin-1")}


async def measure(base: str, pid: int, floods: list[int], requests: int, drip_s: float, big_mb: int,
                  hold_s: float) -> dict:
    port = int(base.rsplit(":", 1)[1])
    await _normal(base, 5)  # warm
    results = {"idle": {**await _normal(base, requests), "proxy": _proxy_state(pid)}}
    for count in floods:
        opened = time.monotonic()
        connections, ended, dripping = await _flood(port, count, drip_s)
        await asyncio.sleep(max(2.0, drip_s * 2))
        normal = await _normal(base, requests)
        held = sum(not task.done() for task in ended)
        state = _proxy_state(pid)
        await asyncio.sleep(max(0.0, opened + hold_s - time.monotonic()))
        results[f"{count} slow headers"] = {**normal, "proxy": state, "flood_held_by_proxy": held,
                                            f"held_after_{hold_s:g}s": sum(not task.done() for task in ended)}
        dripping.cancel()
        for task in ended:
            task.cancel()
        for _, writer in connections:
            writer.close()
        await asyncio.sleep(3)
    results["one big header"] = await _big_header(port, big_mb, pid)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floods", default="200,2000", help="comma-separated flood sizes")
    parser.add_argument("--requests", type=int, default=50, help="normal requests of each kind per measurement")
    parser.add_argument("--drip-s", type=float, default=1.0, help="seconds between two bytes of one connection")
    parser.add_argument("--big-header-mb", type=int, default=256, help="MiB of the one big header")
    parser.add_argument("--hold-s", type=float, default=15, help="when to count the flood's connections again")
    parser.add_argument("--proxy-fd-limit", type=int, default=0, help="open files the proxy actor may have")
    parser.add_argument("--proxy-callback", default="", help="RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH instead of "
                        "scripts.run_server's (serve_app.http.proxy_ws:proxy_callback: without the head bounds)")
    args = parser.parse_args()
    if args.proxy_callback:
        from scripts import run_server

        run_server.PROXY_ENV["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = args.proxy_callback
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    models = Path(tempfile.mkdtemp(prefix="aicore-bench-slow-")) / "models.json"
    models.write_text(json.dumps(data))
    server = ServeProcess(env={"API_KEYS": KEY}, args={"model_config_path": str(models)})
    try:
        server.start(ready_models=(MODEL,))
        pid = _proxy_pid(server)
        if args.proxy_fd_limit:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (args.proxy_fd_limit, args.proxy_fd_limit))
        results = asyncio.run(measure(server.base_url, pid, [int(n) for n in args.floods.split(",")],
                                      args.requests, args.drip_s, args.big_header_mb, args.hold_s))
    finally:
        server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
