"""The API contract, fuzzed: schemathesis drives the running app from its own /openapi.json.

Every phase (the schema's examples, its boundaries, random fuzzing, and stateful sequences that
follow the links schemathesis finds: a created key fetched, patched, rotated, revoked; a session
read and deleted; a batch job polled and cancelled) with every check: no server error, only
declared statuses, schema-valid requests accepted, invalid ones refused, bodies and headers as
declared, 405 with `Allow`, no auth ignored. The run is bounded (examples per operation, scenario
steps) and seeded, so it takes a few minutes on 2 cores and repeats itself.

It runs under OTHER_KEY (admin), so its sessions, cache entries and batch jobs are not the other
tests' (they use KEY). Left out: /api/v1/models/load and /unload, which would unload (or disable)
models the other tests share this server with; tests/integration/test_lifecycle.py covers them.
What the generation hooks change, and why, is in openapi_fuzz_hooks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from scripts.serve_process import ROOT
from tests.integration.conftest import BATCH_MAX_ITEMS, DEFAULT, MAX_PROMPT_LENGTH, OTHER_KEY, TELEGRAM_SECRET

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12
SCENARIO_STEPS = 6
EXCLUDED = ("/api/v1/models/load", "/api/v1/models/unload")
# 413 (body or prompt too large) refuses invalid data as well as 400 does.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "429"]

[phases.stateful]
max-steps = %d

# DELETE /api/v1/keys/{key_id} revokes: the record stays readable, with `revoked_at` and its usage
# (docs/auth.md, "Rotate and revoke"), so "a deleted resource answers 404" does not hold for keys.
# Every other check, and this one on every other path (sessions are deleted for good), stays on;
# a revoked key answering 401 is tested in tests/integration/security/test_keys_admin.py.
[[operations]]
include-path-regex = "^/api/v1/keys/"
checks.use_after_free.enabled = false
""" % SCENARIO_STEPS


def test_the_served_schema_carries_this_servers_limits_and_models(base_url):
    spec = httpx.get(base_url + "/openapi.json", timeout=60).json()
    schemas = spec["components"]["schemas"]
    prompt = schemas["GenerateRequest"]["properties"]["prompt"]
    assert prompt["maxLength"] == MAX_PROMPT_LENGTH and prompt["minLength"] == 1
    items = schemas["BatchRequest"]["properties"]["items"]
    assert items["maxItems"] == BATCH_MAX_ITEMS
    model = schemas["GenerateRequest"]["properties"]["model"]["anyOf"][0]
    assert DEFAULT in model["enum"] and "minilm-l6-v2" not in model["enum"]
    assert "422" not in json.dumps(spec["paths"]) and "HTTPValidationError" not in schemas


def _figures(report: dict) -> str:
    cases, operations = report["test_cases"], report["operations"]
    failures = {f"{f['code']} {f['title']}": f["count"] for f in report["failures"]}
    return (f"operations tested {operations['tested']}/{operations['total']}, cases {cases['generated']}, "
            f"with failures {cases['with_failures']}, failures {failures or 0}, errors {report['errors'] or 0}")


def test_schemathesis_finds_no_contract_violation(base_url, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", base_url + "/openapi.json",
        # Every check is on by default; naming them (`--checks all`) would override the per-path
        # exception in CONFIG, which the command line outranks.
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "20261129", "--generation-database", "none",
        # The checks include a response-time check (10 s by default): a wall-clock limit, and a
        # fuzzed session grows to 1,400-token chats that take 10-15 s on 2 busy cores. Only a hang
        # fails here: the same bound as the request timeout.
        "--workers", "1", "--request-timeout", "120", "--max-response-time", "120",
        "--suppress-health-check", "too_slow",
        "-H", f"X-API-Key: {OTHER_KEY}", "-H", f"X-Telegram-Bot-Api-Secret-Token: {TELEGRAM_SECRET}",
        "--report", "json", "--report-json-path", str(report), "--no-color",
    ]
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    # Run in tmp_path: schemathesis keeps a cache of past failures in its working directory.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.openapi_fuzz_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    output = run.stdout + run.stderr
    print(output)  # the whole run, failures with a curl each (pytest -s, or below on failure)
    figures = json.loads(report.read_text())
    print(_figures(figures))
    assert run.returncode == 0, output[-20000:]
    # It did test: every selected operation, in every phase, with thousands of cases.
    assert figures["operations"]["tested"] == figures["operations"]["selected"] >= 25
    assert figures["test_cases"]["generated"] >= 1000 and not figures["failures"] and not figures["errors"]
    assert all(phase["status"] == "success" for phase in figures["phases"].values()), figures["phases"]
