"""HTTP routes of key management (`/api/v1/keys`: changes need the admin scope, reads `admin` or
`admin_read`; minting web tokens: the `tokens` or `admin` scope) and of usage over time
(`/api/v1/usage`: `admin` or `admin_read`); the logic lives in serve_app/access/keys.py and
serve_app/access/usage.py. Every change and mint is recorded in the audit log, with the key's
fields before and after (never its secret or hash)."""

from __future__ import annotations

import time
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Query, Request, Response

from serve_app.access.auth import Principal
from serve_app.access.keys import Minter
from serve_app.access.usage import MAX_BUCKETS, quota_fields, series_csv
from serve_app.http.dependencies import require_admin, require_admin_read, require_any_key, require_minter
from serve_app.http.routes.audit import audited
from serve_app.http.routes.statuses import BODY, KEY, KEY_CHANGE, KEYED, QUERY, links, responses_for
from serve_app.protocol.keys import (
    KEY_LIST_LIMIT_DEFAULT,
    KEY_LIST_LIMIT_MAX,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeySelf,
    KeyUpdate,
    KeyUsage,
    KeyView,
    UsageSeries,
    UsageStep,
    WebTokenCreate,
)

router = APIRouter(prefix="/api/v1/keys")
READER = [Depends(require_admin_read)]


def _keys(request: Request):
    return request.app.state.keys


_KEY = "/api/v1/keys/{key_id}"


@router.post("", response_model=KeyCreated, status_code=201,
             responses=responses_for(KEYED, BODY, links(
    201, GetKey=("get", _KEY, "/id"), UpdateKey=("patch", _KEY, "/id"), RotateKey=("post", _KEY + "/rotate", "/id"),
    KeyUsage=("get", _KEY + "/usage", "/id"), RevokeKey=("delete", _KEY, "/id"))))
async def create_key(body: KeyCreate, request: Request, principal: Principal = Depends(require_admin)):
    async with audited(request, principal, "key.create") as action:
        created = await _keys(request).create(body)
        action.target, action.status = created.id, 201
        action.seen(None, created)
    return created


@router.post("/web-tokens", response_model=KeyCreated, status_code=201, responses=responses_for(KEYED, BODY))
async def mint_web_token(body: WebTokenCreate, request: Request, principal: Principal = Depends(require_minter)):
    """A short-lived key for a public web page: `inference` scope only, the models named, its own limits.
    Needs the `tokens` scope (minting only) or `admin`; a managed key's token stays within that key's
    own models, requests and tokens per minute, expiry and priority (a model outside them: 400
    `model_not_found`, as for one that does not exist; a limit above them: 400)."""
    async with audited(request, principal, "web_token.mint") as action:
        minted = await _keys(request).mint_web_token(body, _minter(request, principal))
        action.target, action.status = minted.id, 201
        action.seen(None, minted)
    return minted


def _minter(request: Request, principal: Principal) -> Minter | None:
    """What bounds a managed key's tokens; a bootstrap key (API_KEYS) is bounded by nothing."""
    if principal.bootstrap:
        return None
    limits = request.app.state.limiter.limits(principal.rate_limit_per_minute, principal.tokens_per_minute)
    return Minter(principal.key_id, principal.models, limits.requests, limits.tokens, principal.expires_at,
                  principal.priority, quota_fields(principal.quotas))


@router.get("", response_model=KeyList, dependencies=READER, responses=responses_for(KEYED, QUERY, KEY))
async def list_keys(
    request: Request,
    limit: int = Query(KEY_LIST_LIMIT_DEFAULT, ge=1, le=KEY_LIST_LIMIT_MAX, description="Keys on this page."),
    after: Optional[str] = Query(None, max_length=64, description="The `last_id` of the previous page."),
    search: Optional[str] = Query(None, max_length=100, description="Keys whose name, owner, id or key prefix "
                                  "contain this (case-insensitive)."),
):
    """Keys in the order they were made, a page at a time (`has_more`, then `after=last_id`). A caller
    that names no `limit` gets the first 50: follow `has_more` for the rest."""
    return await _keys(request).page(limit, after=after, search=search)


@router.get("/self", response_model=KeySelf, responses=responses_for(KEYED))
async def own_key(request: Request, principal: Principal = Depends(require_any_key)):
    """The key that presents this request: its id, name, scopes, models, limits in effect and quotas
    with their use (never a secret). Any valid key, of any scope: what a client (the console) needs to
    know what it may do before it tries."""
    limits = request.app.state.limiter.limits(principal.rate_limit_per_minute, principal.tokens_per_minute)
    quotas = await _keys(request).quota_usage(principal.usage_owner, principal.quotas) if principal.quotas else []
    return KeySelf(
        id=principal.key_id, name=principal.name, bootstrap=principal.bootstrap, web_token=principal.web_token,
        minted_by=principal.minted_by, scopes=sorted(principal.scopes),
        models=sorted(principal.models) if principal.models is not None else None,
        default_model=principal.default_model, priority=principal.priority,
        rate_limit_per_minute=0 if principal.bootstrap else limits.requests,
        tokens_per_minute=0 if principal.bootstrap else limits.tokens, expires_at=principal.expires_at,
        quotas=quotas)


@router.get("/{key_id}", response_model=KeyView, dependencies=READER, responses=responses_for(KEYED, KEY))
async def get_key(key_id: str, request: Request):
    return await _keys(request).get(key_id)


@router.patch("/{key_id}", response_model=KeyView, responses=responses_for(KEYED, BODY, KEY_CHANGE))
async def update_key(key_id: str, body: KeyUpdate, request: Request, principal: Principal = Depends(require_admin)):
    async with audited(request, principal, "key.update", key_id) as action:
        view = await _keys(request).update(key_id, body, seen=action.seen)
        enabled = action.changes.get("enabled")
        if enabled is not None:  # turned off or on (other fields may change with it: all are in `changes`)
            action.name = "key.enable" if enabled["after"] else "key.disable"
        return view


@router.delete("/{key_id}", response_model=KeyView, responses=responses_for(KEYED, KEY_CHANGE))
async def revoke_key(key_id: str, request: Request, principal: Principal = Depends(require_admin)):
    async with audited(request, principal, "key.revoke", key_id) as action:
        return await _keys(request).revoke(key_id, seen=action.seen)


@router.post("/{key_id}/rotate", response_model=KeyCreated, responses=responses_for(KEYED, KEY_CHANGE))
async def rotate_key(key_id: str, request: Request, principal: Principal = Depends(require_admin)):
    async with audited(request, principal, "key.rotate", key_id) as action:
        return await _keys(request).rotate(key_id, seen=action.seen)


@router.get("/{key_id}/usage", response_model=KeyUsage, dependencies=READER, responses=responses_for(KEYED, KEY))
async def key_usage(key_id: str, request: Request):
    bootstrap = key_id in request.app.state.auth.bootstrap_ids
    return await _keys(request).usage(key_id, known=bootstrap)



usage_router = APIRouter(prefix="/api/v1/usage")
_CSV_EXAMPLE = ("time,key_id,model,requests,errors,prompt_tokens,completion_tokens\n"
                "1795309200,key-7f3a9c2e51d04b86,smollm2-135m-instruct,41,1,5120,8044\n")


@usage_router.get("", response_model=UsageSeries, dependencies=READER, responses=responses_for(
        KEYED, QUERY, {200: {"content": {"text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}},
                             "description": "The series (format=csv: a header row, then one row per bucket, key "
                             "and model; cells starting with = + - @ are prefixed with ')."}}))
async def usage_series(request: Request, key_id: Optional[str] = Query(None, description="One key (a web token's "
                       "usage is under its minter); omitted: every key."),
                       model: Optional[str] = Query(None, description="One model; `-`: requests that named none."),
                       start: Optional[int] = Query(None, description="Unix s; omitted: an hour before `end`."),
                       end: Optional[int] = Query(None, description="Unix s, exclusive; omitted: now."),
                       step: UsageStep = Query("hour", description="Bucket size (minute buckets are kept a day, "
                                               f"hour buckets 31 days, day buckets 400 days); at most {MAX_BUCKETS} "
                                               "buckets per read."),
                       format: Literal["json", "csv"] = Query("json")):
    """Usage over time: requests, errors, prompt and completion tokens per key and model in time buckets."""
    end = int(time.time()) + 1 if end is None else end
    start = end - 3600 if start is None else start
    rows = await _keys(request).series(step, start, end, key_id, model)
    if format == "csv":
        return Response(series_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="aicore-usage.csv"'})
    return UsageSeries(step=step, start=start, end=end, data=rows)
