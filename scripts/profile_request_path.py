"""Where the CPU goes in a running server: idle, 1 stream, 16 streams.

Starts the server as README command one does (`python -m scripts.run_server`, the models file
given or the shipped one), then for each phase measures for --seconds:
- CPU per process with `pidstat` (Debian's sysstat), summed by role;
- where the Python processes spend it, with `py-spy record` (PyPI `py-spy`, the `bench` extra):
  the functions with the most samples (own time) per process, idle threads left out.
Load: streamed greedy `/v1/completions` of --tokens tokens with distinct prompts (no cache hits),
1 or 16 clients in a loop.

    .venv/bin/python -m scripts.profile_request_path [--seconds 20] [--mode proxy|haproxy] [--out DIR]

py-spy samples at --rate Hz and costs CPU itself (a few % per process sampled); the pidstat
figures come from the same phase, so they include it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import psutil

from scripts.bench_decode import KEY, MODEL
from scripts.bench_request_path import ROLES
from scripts.serve_process import ServeProcess

PYTHON_ROLES = ("ServeReplica", "ServeController", "ProxyActor", "HAProxyManager", "serve run", "dashboard")


def role_of(cmdline: str) -> str:
    return next(name for name, marks in ROLES if any(mark in cmdline for mark in marks))


def processes(root_pid: int) -> dict[int, str]:
    root = psutil.Process(root_pid)
    found = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            found[process.pid] = " ".join(process.cmdline()) or process.name()
        except psutil.NoSuchProcess:
            continue
    return found


def load(base_url: str, clients: int, tokens: int, stop: threading.Event) -> list[int]:
    """Streams on a thread until `stop`; returns [requests done] (filled in as they end)."""
    done = [0]

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, timeout=600) as c:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"model": MODEL, "prompt": f"Story {i}-{n}: once upon a time", "max_tokens": tokens,
                        "stream": True, "ignore_eos": True, "temperature": 0}
                async with c.stream("POST", "/v1/completions", json=body) as r:
                    async for _ in r.aiter_bytes():
                        pass
                done[0] += 1

    async def run() -> None:
        await asyncio.gather(*(client(i) for i in range(clients)))

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
    return done


def pidstat(pids: list[int], seconds: int) -> dict[int, float]:
    """Average %CPU (user + system) per pid over `seconds`."""
    out = subprocess.run(["pidstat", "-u", "-h", "-p", ",".join(map(str, pids)), "1", str(seconds)],
                         capture_output=True, text=True, env={"LC_ALL": "C", "S_TIME_FORMAT": "ISO"}).stdout
    samples: dict[int, list[float]] = collections.defaultdict(list)
    header = None
    for line in out.splitlines():
        fields = line.split()
        if line.startswith("#"):
            header = fields[1:]
            continue
        if not header or len(fields) != len(header):
            continue
        row = dict(zip(header, fields))
        samples[int(row["PID"])].append(float(row["%usr"]) + float(row["%system"]))
    return {pid: sum(values) / len(values) for pid, values in samples.items()}


def pyspy(pids: dict[int, str], seconds: int, rate: int, out: Path) -> dict[int, Path]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    files, procs = {}, []
    for pid in pids:
        files[pid] = out / f"{pid}.txt"
        procs.append(subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate),
                                       "--nonblocking", "-f", "raw", "-o", str(files[pid])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return {"procs": procs, "files": files}


def top_frames(path: Path, count: int) -> list[tuple[str, int]]:
    """Own-time samples per function from py-spy's collapsed stacks."""
    if not path.exists():
        return []
    own: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        leaf = stack.split(";")[-1]
        own[leaf] += int(samples)
        total += int(samples)
    return [(frame, n * 100 // max(total, 1)) for frame, n in own.most_common(count)] + [("(samples)", total)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--mode", default="proxy")
    parser.add_argument("--models-file", help="a models.json other than the shipped one")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aicore-profile-"))
    server_args = {"model_config_path": args.models_file} if args.models_file else {}
    server = ServeProcess(env={"API_KEYS": KEY, "INGRESS_MODE": args.mode}, args=server_args,
                          via_run_server=True).start(ready_models=(MODEL,))
    try:
        for phase, clients in (("idle", 0), ("1 stream", 1), ("16 streams", 16)):
            stop = threading.Event()
            done = load(server.base_url, clients, args.tokens, stop) if clients else [0]
            found = processes(server.proc.pid)
            folder = out / phase.replace(" ", "-")
            folder.mkdir(parents=True, exist_ok=True)
            python = {pid: cmd for pid, cmd in found.items() if any(mark in cmd for mark in PYTHON_ROLES)}
            spies = pyspy(python, args.seconds, args.rate, folder)
            cpu = pidstat(list(found), args.seconds)
            for proc in spies["procs"]:
                proc.wait()
            stop.set()
            print(f"\n## {phase}: {done[0]} requests finished in {args.seconds} s\n")
            by_role: collections.Counter = collections.Counter()
            for pid, value in cpu.items():
                by_role[role_of(found.get(pid, ""))] += value
            print("| role | % of one core |\n|---|---|")
            for role, value in by_role.most_common():
                print(f"| {role} | {value:.1f} |")
            print(f"| total | {sum(by_role.values()):.1f} |")
            for pid, cmd in sorted(found.items(), key=lambda item: -cpu.get(item[0], 0)):
                if cpu.get(pid, 0) < 1:
                    continue
                print(f"\n{cpu[pid]:.1f}% {cmd[:90]}")
                for frame, share in top_frames(spies["files"].get(pid, Path("/nonexistent")), 8):
                    print(f"    {share:>4} {frame[:150]}")
    finally:
        server.stop()
    print(f"\nraw py-spy stacks: {out}")


if __name__ == "__main__":
    main()
