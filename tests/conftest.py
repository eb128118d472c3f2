import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Every test is marked by what it costs to run, from where it lives (so a new test is marked the
# day it is written): `-m quick` is the loop to run after each edit, `-m "not image and not cluster"`
# skips the slowest. Listed most specific first; the first rule whose path matches wins.
COST_RULES = (
    ("tests/deploy/test_image.py", "image"),  # builds and starts the container image (podman)
    ("tests/integration/test_openapi_fuzz.py", "fuzz"),  # thousands of generated requests on a real server
    ("tests/integration/test_admin_console_browser.py", "browser"),  # headless Chromium on a real server
    ("tests/integration/test_chat_page_browser.py", "browser"),
    ("tests/integration/test_multi_node.py", "cluster"),  # a second Ray node or several replicas
    ("tests/integration/test_hot_swap.py", "cluster"),
    ("tests/integration/test_conversation_routing.py", "cluster"),
    ("tests/integration/", "serve"),  # a real `serve run` of the app, Redis, SmolLM2
    ("tests/engine/", "weights"),  # the engines in process with real weights, no Ray
    ("tests/", "quick"),  # pure code, in-process ASGI apps, a private Redis at most
)
COSTS = tuple(dict.fromkeys(cost for _, cost in COST_RULES))


def cost_of(relative_path: str) -> str:
    return next(cost for prefix, cost in COST_RULES if relative_path.startswith(prefix))


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        item.add_marker(getattr(pytest.mark, cost_of(Path(str(item.fspath)).relative_to(ROOT).as_posix())))
