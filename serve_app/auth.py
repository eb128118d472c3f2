"""API key authentication. Keys are kept only as SHA-256 hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional

from fastapi import Request
from starlette.requests import HTTPConnection

from deployments.errors import AuthenticationFailed


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key id (never the key) and its scopes."""

    key_id: str
    scopes: frozenset[str] = frozenset({"inference", "admin"})


class KeyStore:
    def __init__(self, bootstrap_keys: list[str], header: str):
        self._hashes = [hash_key(k) for k in bootstrap_keys]
        self.header = header

    def presented(self, request: HTTPConnection) -> Optional[str]:
        key = request.headers.get(self.header)
        if key:
            return key.strip()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def authenticate(self, request: HTTPConnection) -> Principal:
        """The key in the request's headers (HTTP request or WebSocket handshake)."""
        return self.check(self.presented(request))

    def check(self, key: Optional[str]) -> Principal:
        """A key presented some other way (a WebSocket message, the Telegram bot's configured key)."""
        if not key:
            raise AuthenticationFailed(
                f"missing API key: send it in the {self.header} header or as 'Authorization: Bearer <key>'"
            )
        digest = hash_key(key)
        match = None
        for stored in self._hashes:  # check every key: timing does not reveal which matched
            if hmac.compare_digest(stored, digest):
                match = stored
        if match is None:
            raise AuthenticationFailed("invalid API key")
        return Principal(key_id="boot-" + match[:12])


def require_key(request: Request) -> Principal:
    """FastAPI dependency: the app's KeyStore lives on `app.state.keys`."""
    principal = request.app.state.keys.authenticate(request)
    request.state.key_id = principal.key_id
    return principal
