"""Refused attempts at admin routes, recorded once per request in the audit log's refused stream.

An admin route is one whose dependencies include an admission marked `records_refusals`
(serve_app/http/dependencies.py: the `admin`, `admin_read` and minting dependencies). A request to one
is recorded as refused wherever it is stopped before the route runs:
  - the guard (serve_app/http/guard.py): the global IP allowlist, a body too large or too slow;
  - admission: no or a bad key, a missing scope, the key's own allowlist, its rate limits or
    quotas (429), the key store down (503);
  - request validation (400): a malformed body, a field out of range, a bad query parameter.
Who is recorded as far as it is known: the admitted key, else the stored key whose secret was
presented (an unknown key's text is never recorded), else `anonymous`. The refused stream has its
own cap (serve_app/state/audit_log.py), so anyone flooding refusals evicts only older refusals.
"""

from __future__ import annotations

from typing import Any, Optional

from starlette.requests import HTTPConnection
from starlette.routing import Match

from core.errors import AICoreError
from serve_app.pipeline import Outcome
from serve_app.state.audit_log import REFUSED, Actor

RECORDS_REFUSALS = "records_refusals"  # the attribute that marks an admin admission dependency
_RECORDED = "aicore_refusal_recorded"  # in the request's scope state: one entry per request


def records_refusals(dependency):
    """Mark an admission dependency whose routes are admin routes."""
    setattr(dependency, RECORDS_REFUSALS, True)
    return dependency


def is_admin_route(route: Any) -> bool:
    """The route depends, directly or through its dependencies, on a marked admission."""
    known = getattr(route, "_aicore_admin", None)
    if known is not None:
        return known
    found, pending = False, [getattr(route, "dependant", None)]
    while pending and not found:
        dependant = pending.pop()
        if dependant is None:
            continue
        found = getattr(dependant.call, RECORDS_REFUSALS, False)
        pending.extend(dependant.dependencies)
    try:
        route._aicore_admin = found
    except AttributeError:  # a route type that takes no attributes: classify it again next time
        pass
    return found


def routes_in_order(routers) -> tuple:
    """(route, is an admin route) for every route of the app's routers, in the order they match
    (each with its full path: the routers are included without a further prefix)."""
    return tuple((route, is_admin_route(route)) for router in routers for route in router.routes)


def admin_route_of(scope: dict) -> bool:
    """Whether an HTTP request asks for an admin route: the first route that matches it decides,
    as in the router (the guard asks before routing)."""
    routes = getattr(getattr(scope.get("app"), "state", None), "routes_in_order", ())
    for route, admin in routes:
        if route.matches(scope)[0] == Match.FULL:
            return admin
    return False


async def record_refused(scope: dict, error: AICoreError) -> None:
    """Record the refusal of this request, once (a later call for the same request does nothing)."""
    state = scope.setdefault("state", {})
    if state.get(_RECORDED):
        return
    state[_RECORDED] = True
    app, outcome = scope["app"], Outcome.of(scope)
    connection = HTTPConnection(scope)
    key_id, name = await _who(app, connection, outcome)
    await app.state.audit.record(
        Actor(key_id or "anonymous", name), outcome.client_ip, REFUSED, None, outcome="refused",
        status=error.status, changes={}, route=f"{scope.get('method', 'GET')} {connection.url.path}",
        reason=error.code)


async def record_if_admin_route(scope: dict, error: AICoreError) -> None:
    """An error answered after routing (e.g. validation): recorded when the route is an admin route."""
    if admin_route_of(scope):
        await record_refused(scope, error)


async def _who(app: Any, connection: HTTPConnection, outcome: Outcome) -> tuple[Optional[str], Optional[str]]:
    if outcome.admissions:  # admitted, then refused (its body): the key is known
        principal = outcome.admissions[-1].principal
        return principal.key_id, principal.name
    key_id, name = outcome.key_id, None
    try:
        presented = app.state.auth.presented(connection)
        if not key_id and presented:
            bootstrap = app.state.auth.bootstrap_principal(presented)
            if bootstrap is not None:
                return bootstrap.key_id, bootstrap.name
            key_id = await app.state.keys.id_of(presented)
        if key_id and key_id not in app.state.auth.bootstrap_ids:
            name = (await app.state.keys.record(key_id)).name
    except AICoreError:  # the store is down or the key went away: record what is known
        pass
    return key_id, name
