"""The engine's waiting room: priorities, the interactive reserve, bounds and Retry-After."""

import pytest

from core.errors import Overloaded
from deployments.engine.admission import WaitingRoom


def room(**kw) -> WaitingRoom:
    return WaitingRoom(**{"slots": 4, "max_queued": 8, "max_wait_s": 60.0, "interactive_reserve": 1, **kw})


def test_interactive_requests_start_before_batch_ones_queued_earlier():
    r = room(interactive_reserve=0)
    for name in ("b1", "b2"):
        r.admit(name, "batch", free_slots=0)
    r.admit("i1", "interactive", free_slots=0)
    assert r.take(2) == [("i1", "interactive"), ("b1", "batch")]


def test_batch_work_never_takes_the_reserved_slots():
    r = room(interactive_reserve=1)
    for name in ("b1", "b2", "b3", "b4"):
        r.admit(name, "batch", free_slots=0)
    started = r.take(4)
    assert [p for _, p in started] == ["batch"] * 3  # one of four slots stays free
    assert r.take(1) == []  # the last free slot is the reserve
    r.admit("i1", "interactive", free_slots=1)
    assert r.take(1) == [("i1", "interactive")]


def test_a_full_room_refuses_at_once_with_retry_after():
    r = room(max_queued=2)
    r.service.add(10.0)  # ten seconds a request
    r.admit("a", "interactive", free_slots=0)
    r.admit("b", "interactive", free_slots=0)
    with pytest.raises(Overloaded) as refused:
        r.admit("c", "interactive", free_slots=0)
    assert refused.value.status == 503
    assert refused.value.retry_after_s == 8  # (two waiting + one) x 10 s / 4 slots = 7.5 s
    assert refused.value.headers == {"Retry-After": "8"}
    assert r.refused["interactive"] == 1 and len(r) == 2


def test_a_wait_past_the_limit_is_refused_but_a_free_slot_is_not():
    r = room(max_queued=100, max_wait_s=30.0, slots=2)
    r.service.add(20.0)  # two slots, 20 s a request: each place in line costs ~10 s
    r.admit("first", "interactive", free_slots=1)  # a slot is free: no wait at all
    r.admit("second", "interactive", free_slots=0)  # ~20 s
    r.admit("third", "interactive", free_slots=0)  # ~30 s: still within the limit
    with pytest.raises(Overloaded):
        r.admit("fourth", "interactive", free_slots=0)  # ~40 s > 30 s


def test_interactive_wait_counts_only_interactive_requests_ahead():
    r = room(max_queued=100, max_wait_s=15.0, slots=1)
    for i in range(5):
        r.admit(f"b{i}", "batch", free_slots=0)  # no time measured yet: no estimate, all admitted
    r.service.add(10.0)
    r.admit("i", "interactive", free_slots=0)  # batch work waits behind it: ~10 s
    with pytest.raises(Overloaded):
        r.admit("b5", "batch", free_slots=0)  # behind six requests: ~70 s


def test_removed_requests_leave_the_queue():
    r = room()
    r.admit("a", "batch", free_slots=0)
    assert r.remove("a") and not r.remove("a")
    assert len(r) == 0


def test_overloaded_keeps_retry_after_across_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(Overloaded("busy", retry_after_s=7)))
    assert isinstance(error, Overloaded) and error.retry_after_s == 7 and error.code == "model_overloaded"


def test_keys_take_turns_within_a_class_first_come_within_a_key():
    r = WaitingRoom(slots=1, max_queued=100, max_wait_s=1e9)
    for i in range(5):  # one key's burst arrives first...
        r.admit(f"a{i}", "interactive", free_slots=0, tenant="key-a")
    r.admit("b0", "interactive", free_slots=0, tenant="key-b")  # ...then two other keys
    r.admit("c0", "interactive", free_slots=0, tenant="key-c")
    r.admit("b1", "interactive", free_slots=0, tenant="key-b")
    order = [item for _ in range(8) for item, _ in r.take(1)]
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    assert len(r) == 0


def test_a_removed_request_leaves_its_keys_turn_consistent():
    r = WaitingRoom(slots=1, max_queued=100, max_wait_s=1e9)
    r.admit("a0", "batch", free_slots=0, tenant="key-a")
    r.admit("b0", "batch", free_slots=0, tenant="key-b")
    assert r.remove("a0") and not r.remove("a0")
    assert r.lengths() == {"interactive": 0, "batch": 1}
    assert r.take(1) == [("b0", "batch")] and len(r) == 0
