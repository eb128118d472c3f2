"""The shipped nginx.conf in front of the real app: TLS termination, redirect, SSE, body limit."""

import ssl
import subprocess
import time

import httpx
import pytest

from scripts.serve_process import free_port
from tests.deploy.nginx import render, self_signed_cert
from tests.integration.conftest import KEY
from tests.integration.sse import parse_sse


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, server):
    folder = tmp_path_factory.mktemp("nginx")
    certs = self_signed_cert(folder / "certs")
    http_port, https_port = free_port(), free_port()
    conf = render(folder, certs, http_port=http_port, https_port=https_port, upstream=server.base_url)
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"https://127.0.0.1:{https_port}"
    verify = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail("nginx exited: " + proc.stderr.read().decode())
        try:
            httpx.get(base + "/api/v1/health", verify=verify, timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield {"base": base, "http": f"http://127.0.0.1:{http_port}", "verify": verify}
    proc.terminate()
    proc.wait(timeout=30)


def test_tls_terminates_and_reaches_the_api(nginx):
    r = httpx.get(nginx["base"] + "/api/v1/health", verify=nginx["verify"])
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-request-id"] and "strict-transport-security" in r.headers
    assert r.headers["server"] == "nginx"  # no version number


def test_plain_http_redirects_to_https(nginx):
    r = httpx.get(nginx["http"] + "/api/v1/health?x=1")
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://127.0.0.1") and r.headers["location"].endswith("/api/v1/health?x=1")


def test_sse_stream_passes_through_intact(nginx):
    body = {"prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": True, "stream": True}
    with httpx.Client(verify=nginx["verify"], headers={"X-API-Key": KEY}, timeout=120) as client:
        with client.stream("POST", nginx["base"] + "/api/v1/generate", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            text = "".join(r.iter_text())
    events = parse_sse(text)
    assert text.rstrip().endswith("data: [DONE]")
    assert events[-1]["done"] is True and events[-1]["finish_reason"] == "length"
    assert "".join(e["response"] for e in events[:-1]).strip()


def test_bodies_over_the_limit_stop_at_nginx(nginx):
    big = {"prompt": "a" * (3 * 1024 * 1024)}
    r = httpx.post(nginx["base"] + "/api/v1/generate", json=big, verify=nginx["verify"],
                   headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 413
    assert "x-request-id" not in r.headers  # answered by nginx, the API never saw it
