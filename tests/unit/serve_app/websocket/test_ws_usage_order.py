"""A WebSocket request's usage is settled before its `done` message goes out.

A client that reads its key's usage (or closes the socket) right after `done` must find the
request counted; the HTTP path settles before its last body message the same way
(serve_app/http/guard.py). CI once read 1 request of 2 in HAProxy mode when `done` came first.
The session runs with stand-ins for the socket, the model and the pipeline (routing logic only);
tests/integration/security/test_channels.py checks the same through the real app.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from core.errors import BackendFailure
from core.types import GenerationChunk
from serve_app.pipeline import Admission as RealAdmission
from serve_app.websocket.session import WsSession


class Socket:
    def __init__(self, incoming: list[str], log: list):
        self.incoming, self.log = incoming, log
        self.scope: dict = {}  # the ASGI scope, where the request's outcome lives
        self.answered = asyncio.Event()

    async def accept(self):
        pass

    async def receive(self) -> dict:
        if self.incoming:
            return {"type": "websocket.receive", "text": self.incoming.pop(0)}
        await self.answered.wait()  # the client leaves as soon as its `done` (or `error`) arrives
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str):
        kind = json.loads(text)["type"]
        self.log.append(("sent", kind))
        if kind in ("done", "error"):
            self.answered.set()


class Admission:
    def __init__(self, log: list):
        self.log = log
        self.principal = SimpleNamespace(allowed_models=lambda entries: ["m"], default_model=None, key_id="k1")
        self.closed = False

    settling = RealAdmission.settling  # the real lifecycle over this stand-in's close

    async def close(self, status: int):
        if not self.closed:
            self.closed = True
            await asyncio.sleep(0)  # a store round trip
            self.log.append(("usage recorded", status))


class Generation:
    entry = SimpleNamespace(name="m")
    usage = SimpleNamespace(prompt_tokens=2, completion_tokens=1, total_tokens=3)
    finish_reason = "length"
    started = 0.0

    def tool_answer(self):
        return None  # no tools

    async def chunks(self):
        yield GenerationChunk(text="Hi")


def _run_session(start) -> list:
    """One generate request over a session whose model starts with `start`; the events in order."""
    log: list = []

    async def admit(context, scope):
        return Admission(log)

    async def check(context, scope):
        return (await admit(context, scope)).principal

    pipeline = SimpleNamespace(auth=SimpleNamespace(presented=lambda ws: "key"), admit=admit, check=check)
    service = SimpleNamespace(router=SimpleNamespace(entries={"m": None}, default_model="m"), start=start)
    socket = Socket([json.dumps({"type": "generate", "id": "r1", "prompt": "Hello", "max_tokens": 1})], log)
    session = WsSession(socket, service, pipeline)
    asyncio.run(session.run())
    return [event for event in log if event != ("sent", "ready")]


def test_usage_is_recorded_before_done_is_sent():
    async def start(*args, **kwargs):
        return Generation()

    assert _run_session(start) == [("sent", "token"), ("usage recorded", 200), ("sent", "done")]


def test_a_failed_requests_usage_is_recorded_before_its_error_is_sent():
    async def start(*args, **kwargs):
        raise BackendFailure("the model failed to generate")

    assert _run_session(start) == [("usage recorded", 500), ("sent", "error")]
