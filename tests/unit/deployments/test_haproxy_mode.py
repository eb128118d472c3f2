"""INGRESS_MODE=haproxy's start-path parts without Ray: Ray's real config template rewritten, the real
HAProxy binary started through the wrapper and stopped, the peer stamp turned into the ASGI client."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
from ray.serve.config import HTTPOptions

from deployments.haproxy_peer import PEER_HEADER, HAProxyPeer, stamp
from scripts.haproxy_mode import HAProxyRun, UnexpectedConfig, find_haproxy, ingress_mode, rewrite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_config(folder: Path, host: str, port: int) -> Path:
    """The config Ray's HAProxy manager writes at start (its template, its defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = HAProxyConfig(http_options=HTTPOptions(host=host, port=port), socket_path=str(folder / "admin.sock"),
                        server_state_base=str(folder), server_state_file=str(folder / "server-state"),
                        metrics_socket_path=str(folder / "metrics.sock"))
    HAProxyApi(cfg=cfg, config_file_path=str(folder / "haproxy.cfg"))._generate_config_file_internal()
    return folder / "haproxy.cfg"


def test_ingress_mode_reads_like_the_setting():
    assert ingress_mode({}) == "proxy" and ingress_mode({"INGRESS_MODE": "HAProxy"}) == "haproxy"
    with pytest.raises(ValueError):
        ingress_mode({"INGRESS_MODE": "nginx"})


def test_rewrite_drops_the_stats_and_exporter_listeners_and_stamps_the_peer(tmp_path):
    original = _ray_config(tmp_path, "0.0.0.0", 8123).read_text()
    assert "bind :9101" in original and "bind *:8404" in original  # what Ray 2.60 writes
    done = rewrite(original, stamp("s3cret"))
    binds = [line.strip() for line in done.splitlines() if line.strip().startswith("bind ")]
    assert binds == ["bind *:8123"]
    assert "frontend prometheus" not in done and "listen stats" not in done
    lines = done.splitlines()
    assert lines[lines.index("    bind *:8123") + 1].strip() == f'http-request set-header {PEER_HEADER} "%[src] %[src_port] s3cret"'


def test_rewrite_refuses_a_listener_it_does_not_know():
    with pytest.raises(UnexpectedConfig, match="peers"):
        rewrite("frontend http_frontend\n    bind *:1\npeers mesh\n    bind :2\n", "x")
    with pytest.raises(UnexpectedConfig, match="no HTTP frontend"):
        rewrite("global\n    maxconn 1\n", "x")


def _listening(pid: int) -> list[tuple[str, int]]:
    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN]


def test_the_wrapper_starts_the_real_haproxy_and_stop_ends_it(tmp_path):
    run = HAProxyRun({})
    port = _free_port()
    config = _ray_config(run.dir / "node", "127.0.0.1", port)
    wrapper = run.env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    proc = subprocess.Popen([wrapper, "-db", "-f", str(config), "-dR"], env=run.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # bounded wait for HAProxy to listen
            if proc.poll() is not None or find_haproxy(run.dir) and _listening(proc.pid):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert find_haproxy(run.dir) == [proc.pid]  # the wrapper exec'd HAProxy in its own process
        assert _listening(proc.pid) == [("127.0.0.1", port)]  # no stats, no exporter
        assert "bind 127.0.0.1:%d" % port in config.read_text() and "listen stats" not in config.read_text()
    finally:
        run.stop()
    assert proc.wait(timeout=30) is not None
    assert not run.dir.exists() and find_haproxy(run.dir) == []


def _client_seen(headers: list, secret: str = "s3cret", client=("127.0.0.1", 5000)) -> tuple:
    seen = {}

    async def app(scope, receive, send):
        seen.update(client=scope["client"], headers=scope["headers"])

    asyncio.run(HAProxyPeer(app, secret)({"type": "http", "client": client, "headers": headers}, None, None))
    return seen["client"], seen["headers"]


def test_a_stamp_with_the_secret_names_the_client_and_never_reaches_the_app():
    other = (b"x-api-key", b"k")
    assert _client_seen([(PEER_HEADER.encode(), b"203.0.113.9 4242 s3cret"), other]) == (("203.0.113.9", 4242), [other])
    assert _client_seen([(PEER_HEADER.encode(), b"2001:db8::1 4242 s3cret")])[0] == ("2001:db8::1", 4242)
    for forged in (b"203.0.113.9 4242 guess", b"203.0.113.9 s3cret", b""):
        assert _client_seen([(PEER_HEADER.encode(), forged), other]) == (("127.0.0.1", 5000), [other])
    twice = [(PEER_HEADER.encode(), b"203.0.113.9 1 s3cret")] * 2
    assert _client_seen(twice)[0] == ("127.0.0.1", 5000)
    assert _client_seen([(PEER_HEADER.encode(), b"203.0.113.9 1 ")], secret="")[0] == ("127.0.0.1", 5000)


def test_the_controller_callback_moves_only_the_fallback_proxy_to_the_node_ip(monkeypatch):
    from types import SimpleNamespace

    from ray.serve._private.proxy_state import ProxyStateManager

    from deployments.ray_net import bind_fallback_proxy_to_node_ip

    monkeypatch.setattr(ProxyStateManager, "_start_proxy", ProxyStateManager._start_proxy)  # restored after
    assert bind_fallback_proxy_to_node_ip() and bind_fallback_proxy_to_node_ip()  # idempotent
    manager = SimpleNamespace(logging_config=None, _http_options=HTTPOptions(host="0.0.0.0", port=8000),
                              _grpc_options=None, _proxy_actor_class=None,
                              _actor_proxy_wrapper_class=lambda **kwargs: kwargs)
    start = ProxyStateManager._start_proxy
    fallback = start(manager, "SERVE_PROXY_ACTOR-fallback-n1", "n1", "10.0.0.5",
                     HTTPOptions(host="0.0.0.0", port=8500))
    assert (fallback["http_options"].host, fallback["http_options"].port) == ("10.0.0.5", 8500)
    assert start(manager, "SERVE_PROXY_ACTOR-n1", "n1", "10.0.0.5")["http_options"].host == "0.0.0.0"
    loopback = start(manager, "SERVE_PROXY_ACTOR-fallback-n1", "n1", "10.0.0.5", HTTPOptions(host="127.0.0.1"))
    assert loopback["http_options"].host == "127.0.0.1"  # a host the operator chose is kept
