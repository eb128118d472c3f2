"""What each operation can answer besides success, derived from the errors it can raise.

A route lists the groups of errors its path raises (`responses_for(KEYED, BODY, MODEL)`); each
error class carries its status and code, so the OpenAPI document declares exactly those statuses,
each with the OpenAI error body and the codes it may carry. Validation errors are 400 here, never
FastAPI's 422 (serve_app/error_mapping.py maps them; serve_app/http/openapi.py drops the 422 FastAPI adds).
"""

from __future__ import annotations

from typing import Iterable, Union

from core.errors import (
    AddressNotAllowed,
    AICoreError,
    AuthenticationFailed,
    BackendFailure,
    BodyTooLarge,
    ContentFiltered,
    ContextLengthExceeded,
    InsufficientMemory,
    InvalidRequest,
    JobNotFound,
    KeyConflict,
    KeyDisabled,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
    ModelDisabled,
    ModelNotFound,
    ModelUnavailable,
    NotEnabled,
    Overloaded,
    PermissionDenied,
    PromptTooLong,
    QuotaExceeded,
    RateLimited,
    SessionBusy,
    SessionNotFound,
    StoreUnavailable,
    TooManyMessages,
    WrongSecret,
)
from serve_app.protocol.errors import ErrorResponse

Errors = tuple[type[AICoreError], ...]
KEY_MARK = "x-api-key"  # on the 401 of operations that check a key: serve_app/http/openapi.py declares the key


class KeyErrors(tuple):
    """The errors of checking an API key: an operation listing them takes a key."""

# A key is checked (require_key, require_admin, require_metrics): missing or bad key, wrong scope
# or address, over its rate limits or quotas, the key store unreachable.
KEYED = KeyErrors((AuthenticationFailed, KeyRevoked, KeyDisabled, KeyExpired, PermissionDenied, AddressNotAllowed,
                   RateLimited, QuotaExceeded, StoreUnavailable))
# A JSON body: invalid (400: invalid_value, invalid_json), larger than MAX_BODY_BYTES (413).
BODY: Errors = (InvalidRequest, BodyTooLarge)
QUERY: Errors = (InvalidRequest,)  # an invalid query parameter
# The request names a model (or takes the default): unknown or not the key's (one answer), not available now.
MODEL: Errors = (ModelNotFound, ModelUnavailable, ModelDisabled, Overloaded, InsufficientMemory)
# A model reads the input: too long in characters or tokens, refused by the content policy, the engine failed.
INPUT: Errors = (PromptTooLong, ContextLengthExceeded, ContentFiltered, BackendFailure)
GENERATION: Errors = BODY + MODEL + INPUT + (TooManyMessages,)
CHAT: Errors = GENERATION + (SessionBusy,)  # a turn of a session while another turn of it runs
EMBEDDING: Errors = BODY + MODEL + INPUT
MODEL_CARD: Errors = (ModelNotFound,)
SESSION: Errors = (SessionNotFound,)
JOB: Errors = (JobNotFound,)
KEY: Errors = (KeyNotFound,)
KEY_CHANGE: Errors = (KeyNotFound, KeyConflict)
LOAD: Errors = BODY + (ModelNotFound, InsufficientMemory, ModelUnavailable)
# The Telegram webhook: off, secret missing or wrong, chat state unreachable; generation errors
# become the chat's answer (an HTTP error would make Telegram retry).
WEBHOOK: Errors = BODY + (NotEnabled, AuthenticationFailed, WrongSecret, StoreUnavailable)

_VALIDATION_CODES = ("invalid_value", "invalid_json")  # serve_app.http.errors.validation_error
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def _codes(errors: Iterable[type[AICoreError]]) -> list[str]:
    codes: set[str] = set()
    for error in errors:
        if error.code:
            codes.add(error.code)
        if error is InvalidRequest:
            codes.update(_VALIDATION_CODES)
    return sorted(codes)


def responses_for(*groups: Union[Errors, dict]) -> dict:
    """FastAPI `responses=`: one entry per status the given error groups can answer; a dict
    (e.g. `streamed(...)` or a 202) is merged in as it is."""
    by_status: dict[int, list[type[AICoreError]]] = {}
    extra: dict = {}
    keyed = any(isinstance(group, KeyErrors) for group in groups)
    for group in groups:
        if isinstance(group, dict):
            extra.update(group)
            continue
        for error in group:
            by_status.setdefault(error.status, []).append(error)
    responses: dict = {}
    for status in sorted(by_status):
        entry = {"model": ErrorResponse, "description": "Error codes: " + ", ".join(_codes(by_status[status]))}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        if status == 401 and keyed:
            entry[KEY_MARK] = True
        responses[status] = entry
    # Ray's HTTP proxy answers these before any route runs (serve_app/http/proxy_http.py): any operation may.
    responses[408] = {"model": ErrorResponse, "description": "Error codes: header_timeout (the request head "
                      "did not arrive within HEADER_TIMEOUT_S)"}
    responses[431] = {"model": ErrorResponse, "description": "Error codes: headers_too_large (the request "
                      "head is over MAX_HEADER_BYTES)"}
    return {**dict(sorted(responses.items())), **extra}


def links(status: int, **targets: tuple[str, str, str]) -> dict:
    """OpenAPI links of the `status` answer: name=(method, path, JSON pointer of the answer's
    value), each to the one path parameter of `path` (a client, or a fuzzer, follows them)."""
    found = {}
    for name, (method, path, pointer) in targets.items():
        parameter = path[path.rindex("{") + 1: path.rindex("}")]
        ref = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method
        found[name] = {"operationRef": ref, "parameters": {parameter: "$response.body#" + pointer}}
    return {status: {"links": found}}
