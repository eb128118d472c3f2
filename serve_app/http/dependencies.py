"""The FastAPI dependencies: the HTTP adapter of the one admission path (serve_app/pipeline.py): `require_key`
(inference scope), `require_admin`, `require_admin_read` (the `admin` or `admin_read` scope: reads
of keys, usage, jobs and the audit log), `require_metrics` (the `metrics` or `admin` scope) and
`require_minter` (the `tokens` or `admin` scope) admit the request and count it against the
key's limits at once; `require_caller` admits a generation, embedding or batch-job request whose
limits the service takes once it knows the model and the request's size; `require_batch_caller`
only checks the key of a synchronous batch call, whose items are admitted one by one. The admin dependencies
record a refused attempt (no or a bad key, a missing scope, a key's address, its limits, the store
down) in the audit log (serve_app/http/refusals.py).
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from core.errors import AICoreError
from serve_app.access.auth import Principal
from serve_app.http.refusals import record_refused, records_refusals
from serve_app.pipeline import Admission, Outcome, RequestContext


def http_context(connection: HTTPConnection, channel: str = "http") -> RequestContext:
    """The request context of an HTTP request or WebSocket connection."""
    outcome = Outcome.of(connection)
    return RequestContext(channel, connection.app.state.auth.presented(connection), outcome.client_ip, outcome)


async def _admitted(request: Request, *scopes: str, count: bool = True, audited: bool = False) -> Admission:
    try:
        admission = await request.app.state.pipeline.admit(http_context(request), *scopes)
        Outcome.of(request).admissions.append(admission)  # the guard closes it when the response ends
        if count:
            await admission.limit()
    except AICoreError as error:  # refused: no key, its scope, its address, its limits, the store down
        if audited:
            await record_refused(request.scope, error)
        raise
    return admission


async def require_key(request: Request) -> Principal:
    """Listings and sessions: the `inference` scope, counted against the key's request limit."""
    return (await _admitted(request, "inference")).principal


async def require_any_key(request: Request) -> Principal:
    """A key asking about itself: any valid key, any scope, counted against its request limit."""
    return (await _admitted(request)).principal


async def require_caller(request: Request) -> Admission:
    """Generation, embedding and batch routes: the service takes the limits (model, size)."""
    return await _admitted(request, "inference", count=False)


async def require_batch_caller(request: Request) -> RequestContext:
    """The synchronous batch: the key checked for the call (a refusal is its HTTP error), which is
    no request of its own: each item is admitted as one, the key looked up again."""
    context = http_context(request)
    await request.app.state.pipeline.check(context, "inference")
    return context


@records_refusals
async def require_admin(request: Request) -> Principal:
    """Every change of keys, models, other keys' jobs: the `admin` scope."""
    return (await _admitted(request, "admin", audited=True)).principal


@records_refusals
async def require_admin_read(request: Request) -> Principal:
    """Reads for people who watch but do not operate (keys, usage, jobs, the audit log): `admin_read` or `admin`."""
    return (await _admitted(request, "admin", "admin_read", audited=True)).principal


@records_refusals
async def require_minter(request: Request) -> Principal:
    """Minting web tokens: the `tokens` scope (a public site's backend: that and nothing else) or `admin`."""
    return (await _admitted(request, "tokens", "admin", audited=True)).principal


async def require_job_reader(request: Request) -> Principal:
    """Batch job listings and status: a key's own jobs (`inference`), or every key's (`admin`, `admin_read`)."""
    return (await _admitted(request, "inference", "admin", "admin_read")).principal


async def require_job_canceller(request: Request) -> Principal:
    """Cancelling a batch job: a key's own (`inference`), or any (`admin`; `admin_read` changes nothing)."""
    return (await _admitted(request, "inference", "admin")).principal


async def require_metrics(request: Request) -> Principal:
    """Metrics list every key id and its usage: `metrics` (a scraper's key), `admin` or `admin_read`."""
    return (await _admitted(request, "metrics", "admin", "admin_read")).principal


async def require_model_viewer(request: Request) -> Principal:
    """The model list with states and replicas: callers (`inference`) and operators (`admin`, `admin_read`)."""
    return (await _admitted(request, "inference", "admin", "admin_read")).principal
