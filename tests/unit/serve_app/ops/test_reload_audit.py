"""A config reload by `scripts.deploy` is one audit entry, its actor the command and the config's
revision, however many ingress replicas reload it."""

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from serve_app.ops.reload_audit import config_revision, record_reload
from serve_app.state.audit_log import AuditLog, Query
from serve_app.state.store import MemoryStore
from tests.unit.stores import store_params


@pytest.fixture(params=[p for p in store_params() if p.id != "hub"])
def shared(request):
    store = request.param()
    return SimpleNamespace(store=store, audit=AuditLog.for_store(store))


def test_a_reload_is_recorded_once_with_the_deploy_command_and_revision(shared):
    before = {"m1": "rev-a", "m2": "rev-b"}
    after = {"m1": "rev-" + uuid.uuid4().hex, "m2": "rev-b"}  # a deploy of its own (a shared Redis keeps marks)
    user_config = {"revisions": after, "deployed_by": "scripts.deploy", "config_revision": config_revision(after)}

    async def scenario():
        for _ in range(2):  # two ingress replicas sharing the store reload the same deploy
            await record_reload(shared, user_config, before, after, "/srv/aicore/models.json")
        return (await shared.audit.page(Query(action="config.reload", target="models.json", limit=200)))[0]

    entries = [e for e in asyncio.run(scenario()) if e["actor_name"] == f"config {config_revision(after)}"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor_id"] == "scripts.deploy" and entry["client_ip"] is None and entry["outcome"] == "ok"
    assert entry["changes"] == {"revision.m1": {"before": "rev-a", "after": after["m1"]}}


def test_a_replica_of_its_own_records_its_own_reload():
    state = SimpleNamespace(store=MemoryStore(), audit=None)
    state.audit = AuditLog.for_store(state.store)
    asyncio.run(record_reload(state, {"revisions": {"m": "2"}}, {"m": "1"}, {"m": "1"}, "models.json"))
    entries, _ = asyncio.run(state.audit.page(Query()))
    # models.json did not match what was deployed: nothing reloaded, recorded as failed
    assert [(e["action"], e["outcome"], e["status"], e["changes"]) for e in entries] == [
        ("config.reload", "failed", 409, {})]
