"""What listens where, and who the client is, with the app started both ways the README gives.

Two real `serve run`s of SmolLM2:
- `started`: as `scripts/serve.sh` starts it (scripts.run_server's environment), with
  API_HOST=0.0.0.0 so that the API port is the one thing meant to face the network, and no
  trusted proxy;
- `plain`: a bare `serve run serve_config.yaml` (uvicorn's default FORWARDED_ALLOW_IPS in Ray's
  proxy), behind the shipped nginx.conf with TRUSTED_PROXIES=127.0.0.1/32.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from scripts.serve_process import ROOT, ServeProcess, free_port
from tests.deploy.nginx import render, self_signed_cert
from tests.integration.security.conftest import MODEL, _one_model_file, from_address

KEY = "network-test-admin-key-0123"
SERVE = str(Path(sys.executable).parent / "serve")


def _serve(**kwargs) -> ServeProcess:
    env = {"API_KEYS": KEY, **kwargs.pop("env", {})}
    return ServeProcess(env=env, args={"model_config_path": str(_one_model_file())}, **kwargs)


@pytest.fixture(scope="module")
def started():
    server = _serve(host="0.0.0.0").start(ready_models=(MODEL,))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain():
    server = _serve(plain=True, env={"TRUSTED_PROXIES": "127.0.0.1/32"}).start(ready_models=(MODEL,))
    yield server
    server.stop()


def _key(url: str, cidrs: list[str]) -> str:
    r = httpx.post(url + "/api/v1/keys", headers={"X-API-Key": KEY}, json={"name": "net", "ip_allowlist": cidrs},
                   timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def _status(client: httpx.Client, key: str, **headers) -> int:
    return client.get("/v1/models", headers={"X-API-Key": key, **headers}).status_code


# -- nothing of Ray on the network -----------------------------------------------------------

def _listeners(server: ServeProcess) -> list[tuple[str, int, str]]:
    """(address, port, process) of every TCP socket listening in the app's processes."""
    root = psutil.Process(server.proc.pid)
    processes = {p.pid: p for p in [root, *root.children(recursive=True)]}
    found = []
    for pid, process in processes.items():
        try:
            sockets = process.net_connections(kind="tcp")
            name = f"{process.name()}: {' '.join(process.cmdline())[:60]}"
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port, name) for c in sockets if c.status == psutil.CONN_LISTEN]
    return found


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%")[0])
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_only_the_api_port_faces_the_network(started):
    httpx.post(started.base_url + "/api/v1/generate", headers={"X-API-Key": KEY},
               json={"prompt": "hi", "max_tokens": 2}, timeout=120).raise_for_status()  # every replica busy once
    listeners = _listeners(started)
    assert len(listeners) > 10  # GCS, raylet, agents, dashboard, every replica: all of them were seen
    exposed = [entry for entry in listeners if not _loopback(entry[0])]
    assert [(address, port) for address, port, _ in exposed] == [("0.0.0.0", started.port)], exposed
    assert ("haproxy" if started.haproxy_mode else "ProxyActor") in exposed[0][2]  # INGRESS_MODE (test_haproxy_mode.py)


def _dashboard(server: ServeProcess) -> str:
    found = re.search(r"dashboard at \S*?(http://127\.0\.0\.1:\d+)", server.log())
    assert found, "serve run did not start the dashboard on 127.0.0.1"
    return found.group(1)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.run(list(args), env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ray_token_authentication_is_on_and_the_documented_status_command_works(started):
    address = _dashboard(started)
    refused = _cli(SERVE, "status", "--address", address)
    assert refused.returncode != 0 and "Authentication" in refused.stdout + refused.stderr
    done = _cli(SERVE, "status", "--address", address, RAY_AUTH_MODE="token")  # as docs/security.md writes it
    assert done.returncode == 0, done.stderr
    assert "ai-core" in done.stdout and "RUNNING" in done.stdout


def _model_replicas(server: ServeProcess) -> list[psutil.Process]:
    found = [p for p in psutil.Process(server.proc.pid).children(recursive=True)
             if "ServeReplica" in " ".join(p.cmdline()) and "model-" in " ".join(p.cmdline())]
    assert found, "no model replica among the server's processes"
    return found


def test_the_start_path_runs_model_replicas_at_normal_priority(started, plain):
    """Ray's default worker niceness is 15 (a plain `serve run` keeps it); the start path sets 0
    (scripts/run_server.py QUIET_RAY_ENV: llama.cpp's threads lost ~20% to it, docs/benchmarks.md)."""
    assert {p.nice() for p in _model_replicas(started)} == {0}
    assert {p.nice() for p in _model_replicas(plain)} == {15}


# -- only TRUSTED_PROXIES decides who the client is --------------------------------------------

def test_the_start_path_sees_127_0_0_1_itself_whatever_the_header_says(started):
    only_10, only_local = _key(started.base_url, ["10.0.0.0/8"]), _key(started.base_url, ["127.0.0.1/32"])
    with httpx.Client(base_url=started.base_url, timeout=60) as c:  # from 127.0.0.1, no trusted proxy
        for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.3, 127.0.0.1"}):
            assert _status(c, only_10, **headers) == 403, headers  # the measured spoof: 200 before
            assert _status(c, only_local, **headers) == 200, headers


def test_on_a_plain_serve_run_trusted_proxies_decide(plain):
    """127.0.0.1 is the trusted proxy here: its header names the client; 127.0.0.2's does not."""
    only_10, only_2 = _key(plain.base_url, ["10.0.0.0/8"]), _key(plain.base_url, ["127.0.0.2/32"])
    with httpx.Client(base_url=plain.base_url, timeout=60) as c:
        assert _status(c, only_10, **{"X-Forwarded-For": "10.1.2.3"}) == 200
        assert _status(c, only_2, **{"X-Forwarded-For": "10.1.2.3"}) == 403
        assert _status(c, only_2, **{"X-Forwarded-For": "10.1.2.3, 127.0.0.2"}) == 200
    with from_address(plain.base_url, "127.0.0.2") as c:
        for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.3, 127.0.0.1"}):
            assert _status(c, only_10, **headers) == 403, headers
            assert _status(c, only_2, **headers) == 200, headers


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, plain):
    folder = tmp_path_factory.mktemp("nginx-net")
    certs = self_signed_cert(folder / "certs")
    https_port = free_port()
    conf = render(folder, certs, http_port=free_port(), https_port=https_port, upstream=plain.base_url)
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    base, verify = f"https://127.0.0.1:{https_port}", ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail("nginx exited: " + proc.stderr.read().decode())
        try:
            httpx.get(base + "/api/v1/health", verify=verify, timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield {"base": base, "verify": verify}
    proc.terminate()
    proc.wait(timeout=30)


def test_through_the_shipped_nginx_the_client_is_the_one_nginx_saw(plain, nginx):
    only_10, only_2 = _key(plain.base_url, ["10.0.0.0/8"]), _key(plain.base_url, ["127.0.0.2/32"])
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=nginx["verify"])
    with httpx.Client(base_url=nginx["base"], transport=transport, timeout=60) as c:
        for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}, {"X-Forwarded-For": "10.9.9.9, 10.1.2.3"}):
            assert _status(c, only_10, **headers) == 403, headers  # a spoofed header is not believed
            assert _status(c, only_2, **headers) == 200, headers  # nginx's $remote_addr is


def test_scripts_deploy_works_against_the_token_protected_cluster(started):
    """Last in this module: the redeploy restarts the app's replicas."""
    address = _dashboard(started)
    done = _cli(str(Path(sys.executable)), "-m", "scripts.deploy", "--config", str(started.config_path),
                "--address", address)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 600  # a hang guard, not a timing check: a failed deploy ends it at once
    while True:
        status = _cli(SERVE, "status", "--address", address, RAY_AUTH_MODE="token").stdout
        if "status: RUNNING" in status and "UPDATING" not in status and "DEPLOYING" not in status:
            break
        assert "DEPLOY_FAILED" not in status and time.monotonic() < deadline, status
        time.sleep(1)
    r = httpx.post(started.base_url + "/api/v1/generate", headers={"X-API-Key": KEY},
                   json={"prompt": "hi", "max_tokens": 2}, timeout=120)
    assert r.status_code == 200, r.text
