"""The three `Store`s a unit test can run against: one process's memory, the shared hub as reached
through its deployment handle (in-process), and a real Redis (AICORE_TEST_REDIS_URL, which
scripts/test.sh starts)."""

import os

import pytest

from serve_app.state.shared_store import RemoteStore, StateHub
from serve_app.state.store import MemoryStore, RedisStore

REDIS_URL = os.environ.get("AICORE_TEST_REDIS_URL")


class HubHandle:
    """A StateHub reached as through its deployment handle (`handle.store_call.remote(...)`), in-process."""

    def __init__(self):
        hub = StateHub()

        class _Method:
            @staticmethod
            def remote(method, args):
                return hub.store_call(method, args)

        self.store_call = _Method()


def store_params():
    yield pytest.param(MemoryStore, id="memory")
    yield pytest.param(lambda: RemoteStore(HubHandle()), id="hub")
    yield pytest.param(
        lambda: RedisStore(REDIS_URL), id="redis",
        marks=pytest.mark.skipif(not REDIS_URL, reason="scripts/test.sh starts Redis and sets AICORE_TEST_REDIS_URL"),
    )
