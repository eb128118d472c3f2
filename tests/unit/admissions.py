"""Admissions for unit tests of the services: a real Pipeline over an in-memory store."""

from serve_app.access.auth import Principal
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.state.store import MemoryStore

ANYONE = Principal(key_id="unit-key", scopes=frozenset({"inference"}))


def pipeline(rpm: int = 0, tpm: int = 0, auth=None) -> Pipeline:
    store = MemoryStore()
    return Pipeline(auth, RateLimiter(store, rpm, tpm), KeyService(store, {}))


def admission(principal: Principal = ANYONE, channel: str = "http", on: Pipeline = None) -> Admission:
    return Admission(on or pipeline(), RequestContext(channel, None, None), principal)
