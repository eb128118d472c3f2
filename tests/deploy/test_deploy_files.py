"""The shipped deployment files parse with the real tools: nginx -t and docker compose config."""

import os
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.nginx import ROOT, render, self_signed_cert


def test_nginx_accepts_the_shipped_config(tmp_path):
    conf = render(tmp_path, self_signed_cert(tmp_path / "certs"))
    result = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_refuses_the_config_without_its_certificates(tmp_path):
    conf = render(tmp_path, tmp_path / "missing-certs")
    result = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode != 0 and "fullchain.pem" in result.stderr


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (scripts/test.sh installs it)")


def _compose_config(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "DOCKER_HOST")}
    # An address where no engine listens: `config` must not need one.
    clean["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return subprocess.run(
        [*_compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
    )


def test_compose_file_parses_without_an_engine():
    result = _compose_config(API_KEYS="k1,k2")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"ai-api", "redis", "nginx"}
    api = services["ai-api"]
    assert api["environment"]["API_KEYS"] == "k1,k2"
    mounts = {str(v["target"] if isinstance(v, dict) else v.split(":")[1]) for v in api["volumes"]}
    assert {"/app/models", "/app/logs"} <= mounts
    assert "build" in api and "ports" not in api and "ports" not in services["redis"]  # only nginx is published
    assert {str(p["target"] if isinstance(p, dict) else p.split(":")[-1]) for p in services["nginx"]["ports"]} == {"80", "443"}


def test_compose_refuses_to_start_without_api_keys():
    result = _compose_config()
    assert result.returncode != 0 and "API_KEYS" in result.stderr
