"""Every test is marked by what it costs from where it lives (tests/conftest.py's COST_RULES)."""

import tomllib

from tests.conftest import COSTS, ROOT, cost_of


def test_each_kind_of_test_gets_its_cost():
    assert cost_of("tests/unit/core/test_errors.py") == "quick"
    assert cost_of("tests/deploy/test_deploy_files.py") == "quick"
    assert cost_of("tests/deploy/test_image.py") == "image"
    assert cost_of("tests/engine/test_llama_engine.py") == "weights"
    assert cost_of("tests/integration/security/test_audit.py") == "serve"
    assert cost_of("tests/integration/test_chat_page_browser.py") == "browser"
    assert cost_of("tests/integration/test_openapi_fuzz.py") == "fuzz"
    assert cost_of("tests/integration/test_multi_node.py") == "cluster"


def test_every_cost_is_a_registered_marker():
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    registered = {line.split(":")[0] for line in markers}
    assert set(COSTS) <= registered


def test_every_rule_names_a_path_that_exists():
    from tests.conftest import COST_RULES

    assert all((ROOT / prefix).exists() for prefix, _ in COST_RULES)
