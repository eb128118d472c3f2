"""Helpers for testing the shipped configs/nginx.conf with Debian's nginx and a self-signed cert."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
