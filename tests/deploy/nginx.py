"""Helpers for testing the shipped configs/nginx.conf with Debian's nginx and a self-signed cert."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent.parent
NGINX_CONF = ROOT / "configs" / "nginx.conf"
SHIPPED_CERT_DIR = "/etc/nginx/certs/"


def self_signed_cert(folder: Path) -> Path:
    """fullchain.pem and privkey.pem for 127.0.0.1/localhost, as a certificate authority would name them."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(folder / "privkey.pem"), "-out", str(folder / "fullchain.pem"),
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return folder


def render(folder: Path, cert_dir: Path, *, http_port: int = 0, https_port: int = 0, upstream: str = "") -> Path:
    """A copy of the shipped config with only host-specific values replaced.

    Always: the certificate folder. For a running test server: loopback listen ports, a private
    pid file and the upstream address (Docker's `ai-api` name does not resolve outside compose).
    """
    text = NGINX_CONF.read_text()
    assert SHIPPED_CERT_DIR in text
    text = text.replace(SHIPPED_CERT_DIR, f"{cert_dir}/")
    if http_port:
        text = _replace_once(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
        text = _replace_once(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
        text = "\n".join(line for line in text.splitlines() if "listen [::]:" not in line)
        text = _replace_once(text, "pid /run/nginx.pid;", f"pid {folder}/nginx.pid;")
        text = _replace_once(text, "http://ai-api:8000", upstream)
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} should appear exactly once in configs/nginx.conf"
    return text.replace(old, new)


def free_port() -> int:
    from scripts.serve_process import free_port as pick

    return pick()


class NginxRun:
    """The shipped config served by a real nginx (Debian's) on loopback ports, in front of a test
    server: `base` (HTTPS), `http`, `verify` (an SSL context trusting its self-signed certificate).

    nginx's error log (where limit_conn/limit_req refusals are logged) goes to a file, read with
    `errors()`: a pipe nobody reads would fill up and stop nginx under a flood of refusals."""

    def __init__(self, folder: Path, upstream: str):
        self.folder = folder
        self.certs = self_signed_cert(folder / "certs")
        self.http_port, self.https_port = free_port(), free_port()
        self.conf = render(folder, self.certs, http_port=self.http_port, https_port=self.https_port, upstream=upstream)
        self.base = f"https://127.0.0.1:{self.https_port}"
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.verify = ssl.create_default_context(cafile=str(self.certs / "fullchain.pem"))
        self.error_log = folder / "error.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_s: float = 30) -> "NginxRun":
        import httpx

        with self.error_log.open("wb") as log:
            self.proc = subprocess.Popen(["nginx", "-c", str(self.conf), "-g", "daemon off;"],
                                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + self.errors())
            try:
                httpx.get(self.base + "/api/v1/health", verify=self.verify, timeout=5)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not answer: " + self.errors())
                time.sleep(0.1)

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
