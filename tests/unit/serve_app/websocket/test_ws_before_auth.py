"""Sockets before auth and message sizes (serve_app/websocket/session.py), with stand-ins
for the socket, the pipeline and the model; tests/integration/security/test_websocket_abuse.py
checks the same through Ray's proxy and the real app. Also: each request message of a socket is
one access-log line and one metrics event. Uvicorn's limit in Ray's proxy: test_proxy_ws.py."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest

from core.errors import AuthenticationFailed
from core.logs import request_id_var
from core.types import GenerationChunk
from serve_app.pipeline import Admission as RealAdmission
from serve_app.protocol import ws as protocol
from serve_app.state.store import MemoryStore
from serve_app.websocket.session import Refused, WsGate, WsLimits, WsSession, _size

KEY = "good-key-0123456789"


class Socket:
    """Receives what the test puts in `incoming` (text, bytes, or None for a disconnect)."""

    def __init__(self, *incoming, headers=None):
        self.incoming: asyncio.Queue = asyncio.Queue()
        for item in incoming:
            self.incoming.put_nowait(item)
        self.scope: dict = {"state": {}}
        self.headers = headers or {}
        self.accepted = False
        self.sent: list[dict] = []
        self.closed: tuple | None = None
        self.received = 0

    async def accept(self):
        self.accepted = True

    async def receive(self) -> dict:
        item = await self.incoming.get()
        self.received += 1
        if item is None or isinstance(item, int):
            return {"type": "websocket.disconnect", "code": item or 1000}
        return {"type": "websocket.receive", **({"bytes": item} if isinstance(item, bytes) else {"text": item})}

    async def send_text(self, text: str):
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None):
        self.closed = (code, reason)
        self.incoming.put_nowait(None)


class Generation:
    entry = SimpleNamespace(name="m")
    usage = SimpleNamespace(prompt_tokens=2, completion_tokens=1, total_tokens=3)
    finish_reason = "length"
    started = 0.0

    def __init__(self, admission):
        self.admission = admission

    def tool_answer(self):
        return None  # no tools

    async def chunks(self):
        self.admission.charge(2, 1)
        yield GenerationChunk(text="Hi")


class Admission:
    def __init__(self, context, key_id):
        self.context = context
        self.principal = SimpleNamespace(allowed_models=lambda entries: ["m"], default_model=None, key_id=key_id)

    def charge(self, prompt, completion):
        self.context.outcome.prompt_tokens, self.context.outcome.completion_tokens = prompt, completion

    settling = RealAdmission.settling  # the real lifecycle over this stand-in's close

    async def close(self, status):
        pass


def _pipeline(admitted: list):
    async def admit(context, scope):
        admitted.append(context.key)
        if context.key != KEY:
            raise AuthenticationFailed("invalid API key")
        context.outcome.key_id = "k1"
        return Admission(context, "k1")

    def presented(ws):
        return ws.headers.get("x-api-key")

    async def check(context, scope):  # the connection's own check: the key, no request
        return (await admit(context, scope)).principal

    return SimpleNamespace(auth=SimpleNamespace(presented=presented), admit=admit, check=check)


def _service():
    async def start(admission, model, request_id, params, **kwargs):
        admission.context.outcome.model = "m"
        return Generation(admission)

    return SimpleNamespace(router=SimpleNamespace(entries={"m": None}, default_model="m"), start=start)


def _session(socket, limits=WsLimits(), store=None, record=None, admitted=None):
    gate = WsGate(limits, store)
    session = WsSession(socket, _service(), _pipeline(admitted if admitted is not None else []), gate, record)
    socket.scope["state"]["outcome"] = session.outcome
    session.outcome.client_ip = "192.0.2.7"
    return session, gate


async def _run(socket, **kwargs):
    session, gate = _session(socket, **kwargs)
    await asyncio.wait_for(session.run(), 10)
    return session, gate


def _auth(key=KEY) -> str:
    return json.dumps({"type": "auth", "api_key": key})


def _chat(request_id="r1", content="hi") -> str:
    return json.dumps({"type": "chat", "id": request_id, "messages": [{"role": "user", "content": content}],
                       "max_tokens": 1})


def test_a_large_first_message_is_refused_for_its_size_without_being_parsed(monkeypatch):
    parsed, loads = [], json.loads
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(len(text)) or loads(text, *a, **k))
    monkeypatch.setattr(protocol.WsChat, "model_validate", classmethod(lambda cls, *a, **k: parsed.append(a)))
    huge = _chat(content="x" * 200_000)
    admitted: list = []
    socket = Socket(huge)
    asyncio.run(_run(socket, admitted=admitted))
    assert socket.closed == (1008, "the first message must be auth, at most 4096 bytes")
    assert socket.sent[0]["error"]["code"] == "auth_required" and not admitted
    assert max(parsed) < 1000  # what the test's socket read back (the error message), never the frame


def test_a_first_message_of_another_type_is_refused_and_never_validated(monkeypatch):
    validated = []
    for model in (protocol.WsChat, protocol.WsGenerate):
        monkeypatch.setattr(model, "model_validate", classmethod(lambda cls, *a, **k: validated.append(cls)))
    for first in (_chat(), json.dumps({"type": "chat", "id": "x", "messages": "not a list"}), "not json", "[1]"):
        socket = Socket(first)
        asyncio.run(_run(socket))
        assert socket.closed == (1008, 'the first message must be {"type": "auth", ...}'), first
        assert socket.sent == [{"type": "error", "id": None, "error": {
            "message": 'send {"type": "auth", "api_key": "..."} first, or the key in the handshake headers',
            "type": "authentication_error", "param": None, "code": "auth_required", "request_id": "-"}}]
    assert not validated


def test_a_binary_first_message_is_measured_in_bytes():
    socket = Socket(("é" * 3000).encode())  # 6000 bytes
    asyncio.run(_run(socket))
    assert socket.closed[0] == 1008 and "4096 bytes" in socket.closed[1]
    socket = Socket(_auth().encode(), None)  # a small binary auth is fine
    session, _ = asyncio.run(_run(socket))
    assert socket.sent[0]["type"] == "ready" and session.principal.key_id == "k1"


def test_size_is_exact_where_it_matters():
    for text in ("a" * 5000, "é" * 1000, "é" * 2048, "é" * 2049, "€" * 1366, "€" * 1365, "x"):
        assert (_size(text, None, 4096) > 4096) == (len(text.encode()) > 4096), text
    assert _size(None, b"x" * 10, 4096) == 10


def test_a_wrong_key_closes_the_socket_and_counts_a_failure():
    store = MemoryStore()
    socket = Socket(_auth("wrong-key-0123456789"))
    asyncio.run(_run(socket, store=store))
    assert socket.closed == (1008, "authentication failed") and socket.sent[0]["error"]["code"] == "invalid_api_key"
    assert asyncio.run(store.get("aicore:wsauth:failures:192.0.2.7")) == "1"


def test_an_unauthenticated_socket_is_closed_after_the_timeout():
    socket = Socket()  # never sends
    _, gate = asyncio.run(_run(socket, limits=WsLimits(auth_timeout_s=0.05)))
    assert socket.closed == (1008, "no auth message within 0.05s")
    assert socket.sent[0]["error"]["code"] == "auth_timeout" and gate.total == 0 and not gate.pending


def test_a_message_over_the_limit_after_auth_closes_1009():
    socket = Socket(_auth(), "x" * 2000)
    asyncio.run(_run(socket, limits=WsLimits(max_frame_bytes=1024)))
    assert socket.closed == (1009, "message over 1024 bytes")
    assert socket.sent[-1]["error"]["code"] == "body_too_large"


def test_a_key_in_the_handshake_may_send_a_large_first_request():
    socket = Socket(_chat(content="y" * 6000), headers={"x-api-key": KEY})
    session, gate = _session(socket)

    async def scenario():
        task = asyncio.create_task(session.run())
        for _ in range(500):
            if any(m["type"] == "done" for m in socket.sent):
                break
            await asyncio.sleep(0.01)
        socket.incoming.put_nowait(None)
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert [m["type"] for m in socket.sent] == ["ready", "token", "done"] and socket.closed is None


def test_unauthenticated_sockets_are_capped_per_address_and_in_total():
    async def scenario():
        gate = WsGate(WsLimits(unauthenticated_per_address=2, unauthenticated_total=3))
        await gate.enter("a")
        await gate.enter("a")
        with pytest.raises(Refused) as refused:
            await gate.enter("a")
        assert refused.value.code == 1008 and "from this address" in refused.value.reason
        await gate.enter("b")
        with pytest.raises(Refused) as refused:
            await gate.enter("c")
        assert refused.value.code == 1013
        gate.leave("a")
        await gate.enter("c")
        assert gate.total == 3 and gate.pending == {"a": 1, "b": 1, "c": 1}

    asyncio.run(scenario())


def test_a_refused_socket_is_accepted_then_closed_with_the_reason():
    async def scenario():
        session, gate = _session(Socket())
        gate.limits = WsLimits(unauthenticated_per_address=1)
        await gate.enter("192.0.2.7")
        await asyncio.wait_for(session.run(), 5)
        return session.ws, gate

    socket, gate = asyncio.run(scenario())
    assert socket.accepted and socket.closed == (1008, "too many unauthenticated sockets from this address")
    assert socket.received == 0 and gate.total == 1  # the one held before: the refused one was never counted


def test_repeated_failures_refuse_the_address_for_a_while():
    store = MemoryStore()
    limits = WsLimits(auth_failures=3, auth_block_s=60)

    async def scenario():
        for _ in range(3):
            socket = Socket("nope")
            session, _ = _session(socket, limits, store)
            await session.run()
            assert socket.closed[0] == 1008 and "auth" in socket.closed[1]
        socket = Socket(_auth())  # a good key, but from the refused address
        session, gate = _session(socket, limits, store)
        await session.run()
        other = Socket(_auth(), None)
        other_session, _ = _session(other, limits, store)
        other_session.outcome.client_ip = "192.0.2.8"
        await other_session.run()
        return socket, other, gate

    socket, other, gate = asyncio.run(scenario())
    code, reason = socket.closed
    assert code == 1008 and reason.startswith("too many failed authentications from this address: retry in ")
    assert socket.sent[0]["error"]["code"] == "too_many_auth_failures" and gate.total == 0
    assert other.sent[0]["type"] == "ready"  # another address is not affected


def test_a_client_leaving_before_auth_is_not_a_failure():
    store = MemoryStore()
    socket = Socket(None)
    _, gate = asyncio.run(_run(socket, store=store))
    assert asyncio.run(store.get("aicore:wsauth:failures:192.0.2.7")) is None and gate.total == 0


def test_a_first_message_cut_by_the_proxy_is_a_failure():
    store = MemoryStore()
    socket = Socket(1009)  # uvicorn in Ray's proxy closed it: a message over WS_MAX_FRAME_BYTES
    _, gate = asyncio.run(_run(socket, store=store))
    assert asyncio.run(store.get("aicore:wsauth:failures:192.0.2.7")) == "1" and gate.total == 0


def test_each_request_message_is_one_access_line_and_one_metrics_event(caplog):
    events = []
    socket = Socket(_auth(), _chat("r1"), _chat("r2"), json.dumps({"type": "generate", "id": "r3", "prompt": "x",
                                                                     "max_tokens": 1, "model": "nope"}))
    session, _ = _session(socket, record=events.append)

    async def scenario():
        task = asyncio.create_task(session.run())
        for _ in range(500):
            if len([m for m in socket.sent if m["type"] in ("done", "error")]) == 3:
                break
            await asyncio.sleep(0.01)
        socket.incoming.put_nowait(None)
        await asyncio.wait_for(task, 10)

    def stamp(record):  # the request id the log formatter writes (core/logs.py)
        record.rid = request_id_var.get()
        return True

    access = logging.getLogger("aicore.access")
    access.addFilter(stamp)
    try:
        with caplog.at_level(logging.INFO, logger="aicore.access"):
            asyncio.run(scenario())
    finally:
        access.removeFilter(stamp)
    assert sorted((e.route, e.key_id, e.status, e.model, e.prompt_tokens, e.completion_tokens) for e in events) == [
        ("/api/v1/ws", "k1", 200, "m", 2, 1)] * 3
    lines = [r for r in caplog.records if r.name == "aicore.access"]
    assert sorted(r.ws_id for r in lines) == ["r1", "r2", "r3"]
    assert {(r.method, r.route, r.key_id, r.client_ip, r.status) for r in lines} == {("WS", "/api/v1/ws", "k1",
                                                                                    "192.0.2.7", 200)}
    assert len({r.rid for r in lines}) == 3 and "-" not in {r.rid for r in lines}  # each request its own id
    assert {r.connection_id for r in lines} == {"-"}  # the socket's (set by the request middleware)


def test_a_failed_request_message_is_logged_with_its_status_and_error():
    events = []
    socket = Socket(_auth(), _chat("r1"))
    session, _ = _session(socket, record=events.append)

    async def start(*args, **kwargs):
        raise AuthenticationFailed("key revoked", code="key_revoked")

    session.service.start = start

    async def scenario():
        task = asyncio.create_task(session.run())
        for _ in range(500):
            if any(m["type"] == "error" for m in socket.sent):
                break
            await asyncio.sleep(0.01)
        socket.incoming.put_nowait(None)
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    [event] = events
    assert (event.status, event.key_id, event.error_type, event.error_code) == (401, "k1", "authentication_error",
                                                                                "key_revoked")
