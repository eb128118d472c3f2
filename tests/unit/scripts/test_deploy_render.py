"""`scripts.deploy` renders serve_config.yaml with one revision per model: an edit of one entry
changes that model's override only (so Ray Serve restarts only that deployment)."""

import json

import yaml

from scripts.deploy import render
from serve_app.ops.reload_audit import config_revision
from tests.conftest import ROOT


def _write(folder, models):
    (folder / "models.json").write_text(json.dumps({"models": models}))
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["args"] = {"model_config_path": str(folder / "models.json")}
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _overrides(rendered):
    return {d["name"]: d for d in rendered["applications"][0]["deployments"]}


def test_one_changed_entry_changes_one_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = json.loads((ROOT / "models.json").read_text())["models"]
    models = {name: shipped[name] for name in ("smollm2-135m-instruct", "minilm-l6-v2")}
    before = render(_write(tmp_path, models))
    models["minilm-l6-v2"] = {**models["minilm-l6-v2"], "description": "changed"}
    after = render(_write(tmp_path, models))

    old, new = _overrides(before), _overrides(after)
    assert old["model-smollm2-135m-instruct"] == new["model-smollm2-135m-instruct"]
    assert old["model-minilm-l6-v2"] != new["model-minilm-l6-v2"]
    env = new["model-minilm-l6-v2"]["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["AICORE_MODEL_REVISION"] == new["ingress"]["user_config"]["revisions"]["minilm-l6-v2"]
    # The ingress records the reload in the audit log: by this command, with the config's revision.
    assert new["ingress"]["user_config"]["deployed_by"] == "scripts.deploy"
    assert new["ingress"]["user_config"]["config_revision"] != old["ingress"]["user_config"]["config_revision"]
    assert new["ingress"]["user_config"]["config_revision"] == config_revision(new["ingress"]["user_config"]["revisions"])
    args_before, args_after = before["applications"][0]["args"], after["applications"][0]["args"]
    assert args_before == args_after  # same models, same code: no rebuild of the app

    models["extra"] = models["minilm-l6-v2"]
    added = render(_write(tmp_path, models))["applications"][0]["args"]
    assert added["model_set"] != args_after["model_set"]  # a new model: the app is rebuilt


def test_a_given_code_revision_rebuilds_the_app_and_nothing_else_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = json.loads((ROOT / "models.json").read_text())["models"]
    path = _write(tmp_path, {"smollm2-135m-instruct": shipped["smollm2-135m-instruct"]})
    plain, forced = render(path), render(path, "drill-1")
    assert forced["applications"][0]["args"]["code_revision"] == "drill-1"
    assert plain["applications"][0]["args"]["code_revision"] != "drill-1"
    assert _overrides(plain) == _overrides(forced)  # the same entries: the same per-model overrides


def test_the_app_started_by_run_server_has_the_arguments_deploy_renders(tmp_path, monkeypatch):
    """So the first `scripts.deploy` after command one changes no app argument: a changed entry then
    restarts that model only, not the whole app (ingress, hubs) as a rebuild does."""
    from core.settings import Settings
    from scripts.run_server import _app_args, render_config

    monkeypatch.chdir(tmp_path)
    shipped = json.loads((ROOT / "models.json").read_text())["models"]
    (tmp_path / "models.json").write_text(json.dumps({"models": {"smollm2-135m-instruct": shipped["smollm2-135m-instruct"]}}))
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(tmp_path / "models.json"))
    started = render_config("127.0.0.1", 8000, _app_args(Settings()))
    started_args = yaml.safe_load(started.read_text())["applications"][0]["args"]
    assert started_args["model_set"] and started_args["code_revision"]
    assert render(started)["applications"][0]["args"] == started_args
