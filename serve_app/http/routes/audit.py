"""The audit log over HTTP: `GET /api/v1/audit` (the `admin` or `admin_read` scope), and `audited`, how
an admin route records what it did (serve_app/state/audit_log.py keeps the entries)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from core.errors import AICoreError
from serve_app.access.auth import Principal
from serve_app.http.dependencies import require_admin_read
from serve_app.http.routes.statuses import KEYED, QUERY, responses_for
from serve_app.pipeline import Outcome
from serve_app.protocol.audit import AUDIT_ID_PATTERN, AUDIT_LIMIT_MAX, MAX_TIME, AuditList
from serve_app.state import audit_log
from serve_app.state.audit_log import field_changes

router = APIRouter(prefix="/api/v1")


class Action:
    """What one admin action did: its target and field changes, filled in as it runs."""

    def __init__(self, name: str, target: Optional[str]):
        self.name = name  # e.g. `key.update`; a route may name it better once it knows (`key.disable`)
        self.target = target
        self.status = 200
        self.changes: dict = {}

    def seen(self, before: Optional[BaseModel | dict], after: Optional[BaseModel | dict]) -> None:
        """The thing's state before and after (views without secrets: a key's view has no key or hash)."""
        self.changes = field_changes(_fields(before), _fields(after))


def _fields(value: Optional[BaseModel | dict]) -> Optional[dict]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude={"key"})  # a KeyCreated's secret never goes in
    return value


@asynccontextmanager
async def audited(request: Request, principal: Principal, action: str,
                  target: Optional[str] = None) -> AsyncIterator[Action]:
    """Run an admin action and record it: `ok` with its changes, or `failed` with the error's status."""
    done = Action(action, target)
    client_ip = Outcome.of(request).client_ip
    try:
        yield done
    except AICoreError as error:
        await request.app.state.audit.record(principal.actor, client_ip, done.name, done.target, outcome="failed",
                                             status=error.status, changes=done.changes)
        raise
    await request.app.state.audit.record(principal.actor, client_ip, done.name, done.target, status=done.status,
                                         changes=done.changes)


@router.get("/audit", response_model=AuditList, responses=responses_for(KEYED, QUERY))
async def list_audit(
    request: Request, _: Principal = Depends(require_admin_read),
    actor_id: Optional[str] = Query(None, max_length=100, description="Entries of this actor (key id) only."),
    action: Optional[str] = Query(None, max_length=40, description="Entries of this action only, e.g. `key.revoke`."),
    target: Optional[str] = Query(None, max_length=200, description="Entries about this key id, model or job only."),
    since: Optional[float] = Query(None, ge=0, le=MAX_TIME, description="Entries at or after this unix time."),
    until: Optional[float] = Query(None, ge=0, le=MAX_TIME, description="Entries at or before this unix time."),
    limit: int = Query(50, ge=1, le=AUDIT_LIMIT_MAX, description="Entries on this page."),
    before: Optional[str] = Query(None, pattern=AUDIT_ID_PATTERN, description="The `next_before` of the previous "
                                  "page: entries older than this one."),
):
    """Admin actions and refused admin attempts, newest first (the `admin` or `admin_read` scope).
    Kept AUDIT_RETENTION_DAYS; a page may hold fewer than `limit` entries while `next_before` is set
    (a filter matched few of the entries one page examines): follow `next_before` until it is null."""
    query = audit_log.Query(actor_id=actor_id, action=action, target=target, since=since, until=until,
                            before=before, limit=limit)
    entries, next_before = await request.app.state.audit.page(query)
    return AuditList(data=entries, next_before=next_before)
