"""Does Redis give its memory back after a flood of web tokens, or of batch jobs? (docs/security.md)

Starts its own Redis (Debian's redis-server, loopback, no persistence) and an AI Core server on
it (SmolLM2 only, WEB_TOKEN_KEEP_S, AUDIT_MINT_RETENTION_S and BATCH_JOB_TTL_S short). Every other
setting is the server's default, on purpose. The mint stream of the audit log
(`aicore:audit:tokens`) expires AUDIT_MINT_RETENTION_S after its newest mint, so it is waited for
like the tokens themselves. The admin actions' and refused attempts' streams (AUDIT_RETENTION_DAYS
90), the usage buckets (`aicore:usage:{m,h,d}:<start>`, kept a day, 31 days, 400 days) and the
quota counters (`aicore:quota:...`, a day past their period) are bounded by design, not by expiry
within the run, so the script reports them apart: after each flood, the bytes each holds
(`MEMORY USAGE ... SAMPLES 0` of every `aicore:audit*` key; the sum over `aicore:usage:*` and over
`aicore:quota:*`), and Redis's `used_memory` against the baseline both as is and less those
structures' growth since the baseline. The first ratio is the issue's criterion; the second says
what else stayed.

Token flood (`--tokens N`): a web token is minted by a bootstrap admin key and used once (a
`/v1/models` call: a request that records usage, under the minter: no new series) N times, at a
fixed concurrency. `--floods 2` tells whether a second flood grows it further.

Job flood (`--jobs N`): N batch jobs through `POST /api/v1/generate/batch/jobs`, spread over
`--job-keys` managed keys an admin makes before the baseline (no rate limit, so BATCH_JOBS_PER_KEY,
4 unfinished jobs a key, is the only cap met; a key at it waits a second and submits again).
Each job has `--items` (BATCH_JOB_MAX_ITEMS, 1000) items, each invalid (no prompt: its result is
its error at once, no model runs) with an id of the longest length allowed (128 characters,
echoed in the result), so the stored results are as large as cheap items make them (~0.3 KB an
item; BATCH_JOB_RESULT_BYTES_PER_KEY, 32 MiB a window, is not reached). BATCH_JOB_TTL_S is
`--job-ttl` (longer than the flood, so the peak holds every job's results). `used_memory` is
sampled every half second during the flood: the peak is its largest reading.

Each baseline is read after a warm-up flood of the same kind, at the same concurrency, has
expired: the server's connection pool to Redis is then as wide as the flood's, its Lua scripts
are loaded, and every command the flood sends has run once (Redis 7 keeps a latency histogram per
command from its first call), so what the baseline lacks is only what the flood itself left.
After each flood the script waits until every key that expires within the run has expired
(every key but the bounded-by-design ones above has no TTL left), then until Redis's memory stops
changing (its cron shrinks the emptied key tables a step at a time), and reads it again in parts:
dataset, key tables, scripts, client connections, slow log, latency histograms, what the
allocator (jemalloc) holds, and the bounded-by-design structures. Stops by itself; traffic goes
to 127.0.0.1 only.

    .venv/bin/python -m scripts.bench_store_bounds --tokens 10000 --floods 2 --expires-in 30 --keep 5 \
        --mint-retention 35 --jobs 40 --job-keys 8 --job-warmup 4 --job-ttl 120
    .venv/bin/python -m scripts.bench_store_bounds --tokens 0 --jobs 40    # the job flood alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.redis_process import RedisProcess

ADMIN_KEY = "bench-store-bounds-admin-key"
MODEL = "smollm2-135m-instruct"
STEADY_READS = 5  # equal `used_memory` reads, a second apart, that count as settled
JOBS = "/api/v1/generate/batch/jobs"
ITEM_ID_CHARS = 128  # the longest item id a job takes (ITEM_ID_MAX_CHARS)
TERMINAL = {"completed", "cancelled", "failed"}
HEARTBEAT_S = 5  # BATCH_JOB_HEARTBEAT_S (default): a job stays listed 6 beats past its record
# Kept by design beyond the run (bounded by caps and retention, not by the flood's expiry):
AUDIT, USAGE, QUOTA = "aicore:audit", "aicore:usage:", "aicore:quota:"
MINTS = "aicore:audit:tokens"
JOBS_WAIT_S = 900  # the longest wait for a flood's jobs to end


def _models_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    path = Path(tempfile.mkdtemp(prefix="aicore-bench-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


async def _flood(url: str, n: int, expires_in_s: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal failures
        async with gate:
            made = await client.post("/api/v1/keys/web-tokens", headers={"X-API-Key": ADMIN_KEY},
                                     json={"models": [MODEL], "expires_in_s": expires_in_s})
            if made.status_code != 201:
                failures += 1
                return
            used = await client.get("/v1/models", headers={"Authorization": f"Bearer {made.json()['key']}"})
            failures += used.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))
    return failures


def _job_body(job: int, items: int) -> dict:
    """`items` invalid items (no prompt), each with a unique id of the longest length allowed."""
    return {"items": [{"id": f"job{job:05d}-item{i:04d}-".ljust(ITEM_ID_CHARS, "x")} for i in range(items)]}


async def _job_flood(url: str, keys: list[str], n: int, items: int, start: int) -> dict:
    """Submit `n` jobs spread over `keys` (one submitter a key, a key at its cap retries a second
    later), then wait until every job has ended. Counts of what was answered."""
    answers: dict[str, int] = {}
    ids: list[str] = []
    queue = list(range(start, start + n))

    async def submitter(client: httpx.AsyncClient, key: str) -> None:
        while queue:
            job = queue.pop()
            body = _job_body(job, items)
            while True:
                reply = await client.post(JOBS, headers={"X-API-Key": key}, json=body)
                code = reply.json().get("error", {}).get("code") if reply.status_code != 202 else None
                answers[str(code or reply.status_code)] = answers.get(str(code or reply.status_code), 0) + 1
                if reply.status_code == 202:
                    ids.append(reply.json()["id"])
                    break
                if code != "too_many_batch_jobs":
                    break  # counted; this job is not submitted
                await asyncio.sleep(1)

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(submitter(client, key) for key in keys))
        statuses: dict[str, str] = {}
        waiting_since = time.monotonic()
        while len(statuses) < len(ids) and time.monotonic() - waiting_since < JOBS_WAIT_S:
            for job_id in ids:
                if job_id not in statuses:
                    reply = await client.get(f"{JOBS}/{job_id}", params={"results": "false"},
                                             headers={"X-API-Key": ADMIN_KEY})
                    if reply.status_code == 200 and reply.json()["status"] in TERMINAL:
                        statuses[job_id] = reply.json()["status"]
                    elif reply.status_code == 404:
                        statuses[job_id] = "expired before it was seen ending"
            await asyncio.sleep(1)
    ended: dict[str, int] = {}
    for status in statuses.values():
        ended[status] = ended.get(status, 0) + 1
    if len(statuses) < len(ids):
        ended[f"not ended within {JOBS_WAIT_S} s"] = len(ids) - len(statuses)
    return {"submissions_answered": answers, "jobs_accepted": len(ids), "jobs_ended": ended}


def kind_by_design(key: str) -> str | None:
    """"audit", "usage_buckets", "quota_counters" for a key kept by design; None otherwise (a
    key's own `aicore:usage:<id>` counters are the key's, not a bucket; the mint stream expires)."""
    if key.startswith(AUDIT) and key != MINTS:
        return "audit"
    if key.startswith(USAGE) and key.split(":")[2] in ("m", "h", "d"):
        return "usage_buckets"
    return "quota_counters" if key.startswith(QUOTA) else None


def by_design(client: redis.Redis) -> dict:
    """Bytes (MEMORY USAGE, every element counted) of the structures kept by design: each audit
    stream, and the sums over the usage buckets and the quota counters."""
    held: dict = {"audit": {}, "usage_buckets": 0, "usage_buckets_keys": 0, "quota_counters": 0,
                  "quota_counters_keys": 0}
    for key in client.scan_iter(match="aicore:*", count=1000):
        kind = kind_by_design(key)
        if kind == "audit":
            held["audit"][key] = {"bytes": client.memory_usage(key, samples=0) or 0,
                                  "entries": client.xlen(key) if client.type(key) == "stream" else None}
        elif kind is not None:
            held[kind] += client.memory_usage(key, samples=0) or 0
            held[kind + "_keys"] += 1
    held["audit"] = dict(sorted(held["audit"].items()))
    held["total"] = sum(a["bytes"] for a in held["audit"].values()) + held["usage_buckets"] + held["quota_counters"]
    return held


def memory(client: redis.Redis) -> dict:
    """Redis's `used_memory` and its parts (INFO memory, MEMORY STATS), in bytes; then the
    structures kept by design (read after, so the reading does not count their own scan)."""
    info, stats = client.info("memory"), client.memory_stats()
    tables = stats.get("db.0", {})
    return {
        "used_memory": info["used_memory"],
        "dataset": info["used_memory_dataset"],  # used_memory less every overhead below
        "key_tables": tables.get("overhead.hashtable.main", 0) + tables.get("overhead.hashtable.expires", 0),
        "scripts": info["used_memory_scripts"],
        "clients": info["mem_clients_normal"],
        "startup": info["used_memory_startup"],
        # What jemalloc has handed out and what it keeps from the OS (freed pages it may reuse).
        "allocator_allocated": info.get("allocator_allocated", 0),
        "allocator_resident": info.get("allocator_resident", 0),
        "rss": info["used_memory_rss"],
        "keys": client.dbsize(),
        "connections": client.info("clients")["connected_clients"],
        "slowlog_entries": client.slowlog_len(),  # kept (at most 128) with their arguments: dataset bytes
        # Redis 7 keeps a latency histogram (~23 KB, counted as dataset) per command name from its
        # first call on: bounded by the commands used, not by the traffic.
        "latency_histograms": len(_commands(client)),
        "by_design": by_design(client),
    }


def _commands(client: redis.Redis) -> set[str]:
    """The commands Redis keeps a latency histogram of (every one called since it started)."""
    prefix = "latency_percentiles_usec_"
    return {name[len(prefix):] for name in client.info("latencystats") if name.startswith(prefix)}


def _only_lasting_keys(client: redis.Redis) -> bool:
    """Every key that expires within the run has expired: what stays are keys without a TTL (the
    admin-made keys and their usage counters, the audit streams) and the usage buckets and
    quota counters, which expire a day or more later by design."""
    return all(kind_by_design(key) or client.ttl(key) == -1 for key in client.scan_iter(count=1000))


def settle(client: redis.Redis, limit_s: float) -> tuple[float, bool]:
    """Wait until every expiring key is gone, then until `used_memory` holds still: (seconds waited,
    whether it did settle before `limit_s`)."""
    started = time.monotonic()
    while not _only_lasting_keys(client) and time.monotonic() - started < limit_s:
        time.sleep(1)
    readings: list[int] = []
    while time.monotonic() - started < limit_s:
        readings = (readings + [client.info("memory")["used_memory"]])[-STEADY_READS:]
        if len(readings) == STEADY_READS and len(set(readings)) == 1:
            return round(time.monotonic() - started, 1), True
        time.sleep(1)
    return round(time.monotonic() - started, 1), False


class PeakSampler:
    """`used_memory` every half second in a thread; `peak` is the full reading taken when the
    sampled value was at its largest so far (re-read on each new maximum)."""

    def __init__(self, client: redis.Redis):
        self.client, self.top, self.peak = client, 0, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            used = self.client.info("memory")["used_memory"]
            if used > self.top:
                self.top, self.peak = used, memory(self.client)
            self.done.wait(0.5)

    def __enter__(self) -> "PeakSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def _settled(client: redis.Redis, flood: dict, commands_before: set[str], limit_s: float) -> dict:
    waited_s, settled = settle(client, limit_s)
    left = sorted(k for k in client.keys("*") if not kind_by_design(k))[:10]  # KEYS: in every baseline
    by_design(client)  # its commands' latency histograms exist before the reading (the baseline's too)
    return {**flood, "settled": settled, "settled_after_s": waited_s, "left_besides_by_design": left,
            "commands_first_called": sorted(_commands(client) - commands_before), "after_expiry": memory(client)}


def _token_flood(server: ServeProcess, client: redis.Redis, n: int, args: argparse.Namespace) -> dict:
    commands_before = _commands(client)
    started = time.monotonic()
    failures = asyncio.run(_flood(server.base_url, n, args.expires_in, args.concurrency))
    flood = {"tokens": n, "failures": failures, "flood_s": round(time.monotonic() - started, 1),
             "peak": memory(client)}
    return _settled(client, flood, commands_before, max(args.expires_in + args.keep, args.mint_retention) + 300)


def _jobs_flood(server: ServeProcess, client: redis.Redis, keys: list[str], n: int, start: int,
                args: argparse.Namespace) -> dict:
    commands_before = _commands(client)
    started = time.monotonic()
    with PeakSampler(client) as sampler:
        answered = asyncio.run(_job_flood(server.base_url, keys, n, args.items, start))
    flood = {"jobs": n, "items_per_job": args.items, **answered, "flood_s": round(time.monotonic() - started, 1),
             "peak": sampler.peak}
    return _settled(client, flood, commands_before, args.job_ttl + 6 * HEARTBEAT_S + 300)


def _make_keys(url: str, count: int) -> list[str]:
    made = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(count):
            reply = http.post("/api/v1/keys", headers={"X-API-Key": ADMIN_KEY},
                              json={"name": f"bench-jobs-{i}", "models": [MODEL], "rate_limit_per_minute": 0,
                                    "tokens_per_minute": 0})
            reply.raise_for_status()
            made.append(reply.json()["key"])
    return made


def _compare(baseline: dict, floods: list[dict]) -> list[dict]:
    """`used_memory` after each flood against the baseline: as is, and less the growth of the
    structures kept by design."""
    rows = []
    for flood in floods:
        after = flood["after_expiry"]
        grown = after["by_design"]["total"] - baseline["by_design"]["total"]
        rows.append({
            "used_memory_after_vs_baseline": round(after["used_memory"] / baseline["used_memory"], 3),
            "by_design_growth_bytes": grown,
            "used_memory_less_by_design_growth_vs_baseline": round((after["used_memory"] - grown)
                                                                    / baseline["used_memory"], 3),
            "peak_vs_baseline": round(flood["peak"]["used_memory"] / baseline["used_memory"], 3),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10000, help="web tokens a flood (0: no token flood)")
    parser.add_argument("--floods", type=int, default=1, help="floods in a row, each left to expire")
    parser.add_argument("--warmup", type=int, default=64, help="tokens of the warm-up flood before the baseline")
    parser.add_argument("--expires-in", type=int, default=60, help="each token's lifetime (s)")
    parser.add_argument("--keep", type=int, default=5, help="WEB_TOKEN_KEEP_S of the server (s)")
    parser.add_argument("--mint-retention", type=int, default=35, help="AUDIT_MINT_RETENTION_S of the server (s)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=0, help="batch jobs of the job flood (0: none)")
    parser.add_argument("--job-keys", type=int, default=8, help="managed keys the jobs are spread over")
    parser.add_argument("--items", type=int, default=1000, help="items a job (BATCH_JOB_MAX_ITEMS: 1000)")
    parser.add_argument("--job-warmup", type=int, default=8, help="jobs of the warm-up before the job baseline")
    parser.add_argument("--job-ttl", type=int, default=120, help="BATCH_JOB_TTL_S of the server (s)")
    args = parser.parse_args()

    store = RedisProcess().start()
    client = redis.Redis.from_url(store.url, decode_responses=True)
    server = ServeProcess(env={"API_KEYS": ADMIN_KEY, "REDIS_URL": store.url, "WEB_TOKEN_KEEP_S": str(args.keep),
                               "AUDIT_MINT_RETENTION_S": str(args.mint_retention),
                               "BATCH_JOB_TTL_S": str(args.job_ttl), "LOG_LEVEL": "WARNING"},
                          args={"model_config_path": str(_models_file())})
    try:
        server.start(ready_models=(MODEL,))
        report: dict = {"cold": memory(client)}
        if args.tokens:
            warmup = _token_flood(server, client, args.warmup, args)
            baseline = warmup["after_expiry"]
            floods = [_token_flood(server, client, args.tokens, args) for _ in range(args.floods)]
            report["token_floods"] = {
                "baseline_after_warmup": baseline,
                "warmup": {k: warmup[k] for k in ("tokens", "failures", "settled", "commands_first_called")},
                "floods": floods, "compared": _compare(baseline, floods)}
            print(json.dumps({"token_floods": report.pop("token_floods")}, indent=2), flush=True)  # now: a part
        if args.jobs:
            keys = _make_keys(server.base_url, args.job_keys)  # kept (admin-made keys): before the baseline
            warmup = _jobs_flood(server, client, keys, args.job_warmup, 0, args)
            baseline = warmup["after_expiry"]
            flood = _jobs_flood(server, client, keys, args.jobs, args.job_warmup, args)
            report["job_flood"] = {
                "baseline_after_warmup": baseline,
                "warmup": {k: warmup[k] for k in ("jobs", "jobs_accepted", "jobs_ended", "settled",
                                                  "commands_first_called")},
                "flood": flood, "compared": _compare(baseline, [flood])[0]}
        print(json.dumps(report, indent=2))
    finally:
        server.stop()
        store.stop()


if __name__ == "__main__":
    main()
