"""The audit entry of a config reload: `scripts.deploy` sends the ingress new model revisions
(`Ingress.reconfigure`), and each ingress replica re-reads the changed entries.

The actor is the deploy command with the config's revision (a hash of every model's revision,
which `scripts.deploy` sends as `config_revision`); the changes are the models' revisions before
and after. Every ingress replica reloads, but one entry is recorded per reload: the first replica
to count it in the shared store records it (without Redis each replica keeps its own log, and
records its own reload).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from core.errors import StoreUnavailable
from serve_app.state.audit_log import Actor, field_changes

DEPLOY_ACTOR = "scripts.deploy"
RELOAD_MARK = "aicore:audit:reload:"  # <before>:<after> config revision: who records it
MARK_S = 86400


def config_revision(revisions: dict[str, str]) -> str:
    """The revision of a whole config: a hash of every model's revision."""
    return hashlib.sha256(json.dumps(revisions, sort_keys=True).encode()).hexdigest()[:12]


async def record_reload(state: Any, user_config: dict, before: dict[str, str], after: dict[str, str],
                        config_path: str) -> None:
    revision = str(user_config.get("config_revision") or config_revision(user_config.get("revisions") or {}))
    changes = field_changes({f"revision.{name}": rev for name, rev in before.items()},
                            {f"revision.{name}": rev for name, rev in after.items()})
    try:
        first = await state.store.incr_window(f"{RELOAD_MARK}{config_revision(before)}:{revision}", 1, MARK_S) == 1
    except StoreUnavailable:
        first = True  # better twice than never
    if first:
        actor = Actor(str(user_config.get("deployed_by") or DEPLOY_ACTOR), f"config {revision}")
        # Nothing applied: models.json on this node did not match what was deployed (logged by the ingress).
        await state.audit.record(actor, None, "config.reload", Path(config_path).name,
                                 outcome="ok" if changes else "failed", status=200 if changes else 409,
                                 changes=changes)
