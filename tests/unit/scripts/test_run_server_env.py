"""The start path's environment: the safety settings win over whatever the environment says."""

import stat

from scripts.run_server import LOCAL_ONLY_ENV, PROXY_ENV, ensure_private_ray_token, server_env


def test_safety_settings_win(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "2")
    env = server_env({"FORWARDED_ALLOW_IPS": "127.0.0.1"}, local_only=True)
    assert env["FORWARDED_ALLOW_IPS"] == "none" and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "2"  # a quiet default: the environment wins
    assert env["RAY_worker_niceness"] == "0"
    assert env["RAY_LOG_MONITOR_MANY_FILES_THRESHOLD"] == "0"  # the log monitor's glob every 0.1 s


def test_a_cluster_start_is_never_single_node_only(monkeypatch):
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    env = server_env({"RAY_AUTH_MODE": "token"})
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env  # it would refuse `ray start --address`
    assert {k: env[k] for k in PROXY_ENV} == PROXY_ENV and set(LOCAL_ONLY_ENV) - set(env)


def test_ray_token_file_is_private(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = ensure_private_ray_token()
    assert path == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text()) == 64
    token = path.read_text()
    assert ensure_private_ray_token().read_text() == token  # an existing token is kept
    path.chmod(0o644)
    ensure_private_ray_token()
    assert "readable by other users" in capsys.readouterr().err


def test_the_start_path_refuses_a_short_key_before_starting_anything():
    import os
    import subprocess
    import sys

    from scripts.run_server import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("ALLOW_SHORT_API_KEYS",)}
    done = subprocess.run([sys.executable, "-m", "scripts.run_server"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "API_KEYS": "change-me"}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "shorter than 16 characters" in done.stderr and "change-me" not in done.stderr
    assert "Traceback" not in done.stderr
