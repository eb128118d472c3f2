"""HTTP routes of key management (`/api/v1/keys`: the admin scope; minting web tokens: the `tokens`
or `admin` scope); the logic lives in serve_app/access/keys.py."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request

from serve_app.access.auth import Principal, require_admin, require_minter
from serve_app.access.keys import Minter
from serve_app.http.protocol.keys import (
    KEY_LIST_LIMIT_DEFAULT, KEY_LIST_LIMIT_MAX, KeyCreate, KeyCreated, KeyList, KeyUpdate, KeyUsage, KeyView,
    WebTokenCreate,
)
from serve_app.http.routes.statuses import BODY, KEY, KEY_CHANGE, KEYED, QUERY, links, responses_for

router = APIRouter(prefix="/api/v1/keys")
ADMIN = [Depends(require_admin)]


def _keys(request: Request):
    return request.app.state.keys


_KEY = "/api/v1/keys/{key_id}"


@router.post("", response_model=KeyCreated, status_code=201, dependencies=ADMIN,
             responses=responses_for(KEYED, BODY, links(
    201, GetKey=("get", _KEY, "/id"), UpdateKey=("patch", _KEY, "/id"), RotateKey=("post", _KEY + "/rotate", "/id"),
    KeyUsage=("get", _KEY + "/usage", "/id"), RevokeKey=("delete", _KEY, "/id"))))
async def create_key(body: KeyCreate, request: Request):
    return await _keys(request).create(body)


@router.post("/web-tokens", response_model=KeyCreated, status_code=201, responses=responses_for(KEYED, BODY))
async def mint_web_token(body: WebTokenCreate, request: Request, principal: Principal = Depends(require_minter)):
    """A short-lived key for a public web page: `inference` scope only, the models named, its own limits.
    Needs the `tokens` scope (minting only) or `admin`; a managed key's token stays within that key's
    own models, requests and tokens per minute, expiry and priority (a model outside them: 400
    `model_not_found`, as for one that does not exist; a limit above them: 400)."""
    return await _keys(request).mint_web_token(body, _minter(request, principal))


def _minter(request: Request, principal: Principal) -> Minter | None:
    """What bounds a managed key's tokens; a bootstrap key (API_KEYS) is bounded by nothing."""
    if principal.bootstrap:
        return None
    limits = request.app.state.limiter.limits(principal.rate_limit_per_minute, principal.tokens_per_minute)
    return Minter(principal.key_id, principal.models, limits.requests, limits.tokens, principal.expires_at,
                  principal.priority)


@router.get("", response_model=KeyList, dependencies=ADMIN, responses=responses_for(KEYED, QUERY))
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


@router.get("/{key_id}", response_model=KeyView, dependencies=ADMIN, responses=responses_for(KEYED, KEY))
async def get_key(key_id: str, request: Request):
    return await _keys(request).get(key_id)


@router.patch("/{key_id}", response_model=KeyView, dependencies=ADMIN, responses=responses_for(KEYED, BODY, KEY_CHANGE))
async def update_key(key_id: str, body: KeyUpdate, request: Request):
    return await _keys(request).update(key_id, body)


@router.delete("/{key_id}", response_model=KeyView, dependencies=ADMIN, responses=responses_for(KEYED, KEY_CHANGE))
async def revoke_key(key_id: str, request: Request):
    return await _keys(request).revoke(key_id)


@router.post("/{key_id}/rotate", response_model=KeyCreated, dependencies=ADMIN,
             responses=responses_for(KEYED, KEY_CHANGE))
async def rotate_key(key_id: str, request: Request):
    return await _keys(request).rotate(key_id)


@router.get("/{key_id}/usage", response_model=KeyUsage, dependencies=ADMIN, responses=responses_for(KEYED, KEY))
async def key_usage(key_id: str, request: Request):
    bootstrap = key_id in request.app.state.auth.bootstrap_ids
    return await _keys(request).usage(key_id, known=bootstrap)

