"""The one error hierarchy: every client-facing error class lives in core/errors.py, survives
pickling across Ray with everything set on it, and names retry-after one way."""

import ast
import inspect
import pickle

import pytest

import core.errors as errors
from core.errors import (
    AddressNotAllowed,
    AICoreError,
    JobNotFound,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    StoreUnavailable,
    TooManyBatchJobs,
    WrongSecret,
)
from tests import ROOT

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, AICoreError)]


def _bases(node: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}


def test_no_error_class_is_defined_outside_core_errors():
    names = {c.__name__ for c in CLASSES}
    elsewhere = []
    for folder in ("core", "serve_app", "deployments", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "core" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and _bases(node) & names:
                    elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not elsewhere, elsewhere
    assert not (ROOT / "core" / "access_errors.py").exists()


def test_one_permission_denied_keeps_each_code_clients_see():
    assert PermissionDenied("x").code == "insufficient_scope"
    assert issubclass(AddressNotAllowed, PermissionDenied) and AddressNotAllowed("x").code == "ip_not_allowed"
    assert issubclass(WrongSecret, PermissionDenied) and WrongSecret("x").code == "permission_denied"
    assert {c.status for c in CLASSES if issubclass(c, PermissionDenied)} == {403}
    assert [c for c in CLASSES if c.status == 403 and not issubclass(c, PermissionDenied)] == []


def _made(cls):
    if issubclass(cls, QuotaExceeded):
        return cls("used up", quota="tokens-day", retry_after_s=30, headers={"x-ratelimit-limit-tokens": "9"})
    if issubclass(cls, RateLimited):
        return cls("slow down", kind="tokens", retry_after_s=12, param="p", headers={"x-ratelimit-limit": "3"})
    if issubclass(cls, Overloaded):
        return cls("busy", param="p", retry_after_s=7)
    return cls(f"{cls.__name__} happened", param="p")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_pickles_with_all_it_carries(cls):
    error = _made(cls)
    error.code = error.code  # an instance's own code, as `RateLimited(..., code=...)` sets
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.message, back.param, back.code, back.status, back.type) == (
        error.message, error.param, error.code, error.status, error.type)
    assert str(back) == str(error)
    assert getattr(back, "retry_after_s", None) == getattr(error, "retry_after_s", None)
    assert getattr(back, "headers", None) == getattr(error, "headers", None)


def test_an_instance_code_survives_pickling():
    back = pickle.loads(pickle.dumps(RateLimited("wait", code="too_many_in_flight", retry_after_s=2)))
    assert back.code == "too_many_in_flight" and back.retry_after_s == 2 and back.headers["Retry-After"] == "2"
    assert pickle.loads(pickle.dumps(TooManyBatchJobs("many"))).code == "too_many_batch_jobs"


def test_retry_after_has_one_name():
    assert Overloaded("busy", retry_after_s=4).headers == {"Retry-After": "4"}
    assert RateLimited("wait", retry_after_s=0).retry_after_s == 1  # never "retry at once"
    assert QuotaExceeded("used", retry_after_s=60).retry_after_s == 60
    with pytest.raises(TypeError):
        Overloaded("busy", retry_after=4)


def test_a_previous_release_overloaded_pickle_still_loads():
    # What the previous release's Overloaded.__reduce__ wrote; a replica not yet replaced by a
    # deploy still sends it.
    back = errors._rebuild_overloaded(Overloaded, "busy", None, "model_overloaded", 9)
    assert isinstance(back, Overloaded) and back.retry_after_s == 9 and back.headers == {"Retry-After": "9"}


def test_store_and_job_errors_are_in_the_hierarchy():
    assert (StoreUnavailable.status, StoreUnavailable.code) == (503, "store_unavailable")
    assert (JobNotFound.status, JobNotFound.code) == (404, "batch_job_not_found")
