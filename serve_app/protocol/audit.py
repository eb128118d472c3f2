"""Wire types of the audit log: `GET /api/v1/audit` (serve_app/state/audit_log.py keeps it)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

AUDIT_ID_PATTERN = r"^[0-9]{1,15}-[0-9]{1,19}$"  # what a Redis stream id holds (64 bits each)
MAX_TIME = 10**11  # unix seconds a filter may name (ids count milliseconds)
AUDIT_LIMIT_MAX = 200
ACTIONS = ("key.create", "key.update", "key.enable", "key.disable", "key.rotate", "key.revoke", "web_token.mint",
           "model.load", "model.unload", "model.disable", "job.cancel", "config.reload", "admin.refused")

_ENTRY_EXAMPLE = {
    "id": "1796006657123-0", "time": 1796006657.123, "actor_id": "key-7f3a9c2e51d04b86", "actor_name": "ops-admin",
    "client_ip": "203.0.113.7", "action": "key.update", "target": "key-0b6e2d7c5a4f4e3d", "outcome": "ok",
    "status": 200, "changes": {"rate_limit_per_minute": {"before": 60, "after": 120}},
}
_REFUSED_EXAMPLE = {
    "id": "1796006659001-1", "time": 1796006659.001, "actor_id": "key-0b6e2d7c5a4f4e3d", "actor_name": "telegram-bot",
    "client_ip": "198.51.100.4", "action": "admin.refused", "target": None, "outcome": "refused", "status": 403,
    "changes": {}, "route": "POST /api/v1/keys", "reason": "insufficient_scope",
}


class FieldChange(BaseModel):
    before: Any = Field(description="The value before (null: none, or the thing did not exist).")
    after: Any = Field(description="The value after (null: none, or the thing is gone).")


class AuditEntry(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ENTRY_EXAMPLE, _REFUSED_EXAMPLE]})

    id: str = Field(description="The entry's id, `<ms>-<seq>`: pass it as `before` for the entries older than it.",
                    pattern=AUDIT_ID_PATTERN)
    time: float = Field(description="Unix time of the entry.")
    actor_id: str = Field(description="The key id that acted (`boot-...` for a bootstrap key), `anonymous` for a "
                          "refused request without a known key, or the command (`scripts.deploy`).")
    actor_name: Optional[str] = Field(None, description="The key's name (`API_KEYS` for a bootstrap key), or the "
                                      "deployed config's revision for `scripts.deploy`.")
    client_ip: Optional[str] = Field(None, description="The client address the server resolved (null: not a request).")
    action: str = Field(description="One of " + ", ".join(f"`{a}`" for a in ACTIONS) + ".")
    target: Optional[str] = Field(None, description="What was acted on: a key id, a model, a job id, the models file.")
    outcome: Literal["ok", "refused", "failed"] = Field(
        description="`ok`; `failed`: the action answered an error (`status`); `refused`: the caller may not.")
    status: int = Field(description="The HTTP status answered (200 for a config reload).")
    changes: dict[str, FieldChange] = Field(description="The changed fields, before and after; never a secret.")
    route: Optional[str] = Field(None, description="A refused attempt: the method and path asked.")
    reason: Optional[str] = Field(None, description="A refused attempt: the error code answered.")


class AuditList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"object": "list", "data": [_REFUSED_EXAMPLE, _ENTRY_EXAMPLE], "next_before": "1796006657123-0"},
    ]})

    object: Literal["list"] = "list"
    data: list[AuditEntry] = Field(description="Entries newest first.")
    next_before: Optional[str] = Field(None, description="`before` of the next (older) page; null: there is none.")
