"""Each deployment class's module imports first in a fresh process, as a replica imports it
(a circular import between serve_app and deployments broke the metrics hub once)."""

import subprocess
import sys

import pytest

from scripts.run_server import ROOT


@pytest.mark.parametrize("module", ["serve_app.ops.metrics", "serve_app.state.chat_history", "serve_app.ingress",
                                    "deployments.model_deployment", "deployments.ray_net", "serve_app.builder",
                                    # the engine owns its text and sampling helpers: no circle through backends
                                    "deployments.engine.sequence", "deployments.engine.llama_engine",
                                    "serve_app.access.auth", "serve_app.pipeline"])
def test_module_imports_first(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
