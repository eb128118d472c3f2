"""The app in-process, without Ray: the real FastAPI app (routes, auth, limits, error mapping) over
model handles that stand in for replicas. Routing logic only; real replicas with real weights are
tested in tests/integration and tests/engine.

    replica = FakeReplica(pieces=("Hel", "lo"))
    run(app_over(replica), scenario)  # scenario(client): an httpx.AsyncClient on the app
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Callable, Optional, Sequence, Union

import httpx

from core.settings import Settings
from core.types import GenerationChunk, GenerationRequest, Usage
from deployments.config import load_models_file
from serve_app.app import create_app
from serve_app.model_router import ModelEntry, ModelRouter
from tests import ROOT

MODEL = "smollm2-135m-instruct"
KEY = "in-process-key-0123456789"


class FakeStream:
    """A replica's stream: the scripted chunks, `delay_s` before each; `fail` raised instead of the
    first; `silent`: never a chunk (a replica that does not answer). Counts itself in `replica.running`
    from its first chunk to its last."""

    def __init__(self, chunks: Sequence[GenerationChunk], fail: Optional[BaseException] = None, delay_s: float = 0.0,
                 silent: bool = False, replica: Optional["FakeReplica"] = None):
        self.chunks, self.fail, self.delay_s, self.silent, self.replica = list(chunks), fail, delay_s, silent, replica
        self.cancelled, self.started = False, False

    def __aiter__(self):
        return self

    async def __anext__(self) -> GenerationChunk:
        if self.silent:
            await asyncio.sleep(3600)
        if not self.started and self.replica is not None:
            self.started = True
            self.replica.running += 1
            self.replica.peak = max(self.replica.peak, self.replica.running)
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        if not self.chunks:
            raise StopAsyncIteration
        chunk = self.chunks.pop(0)
        if not self.chunks and self.replica is not None:
            self.replica.running -= 1
        return chunk

    def cancel(self) -> None:
        self.cancelled = True
        if self.chunks and self.started and self.replica is not None:
            self.replica.running -= 1
        self.chunks.clear()


class FakeReplica:
    """`handle.options(stream=True).stream.remote(request)` as Ray Serve's handle gives it: records
    every GenerationRequest and answers `pieces` (or `pieces(request)`), then a final chunk with
    `usage` (or `usage(request)`).
    It has no other method: a request path that asks the replica anything else fails. `peak`: the
    most streams it answered at once."""

    def __init__(self, pieces: Union[Sequence[str], Callable[[GenerationRequest], Sequence[str]]] = ("Hello", " there"),
                 usage: Union[Usage, Callable[[GenerationRequest], Usage]] = Usage(5, 2),
                 finish: str = "stop", fail: Optional[BaseException] = None, delay_s: float = 0.0,
                 silent: bool = False):
        self.pieces, self.usage, self.finish, self.fail, self.delay_s = pieces, usage, finish, fail, delay_s
        self.silent, self.running, self.peak = silent, 0, 0
        self.requests: list = []
        self.streams: list[FakeStream] = []

    def options(self, **_):
        return self

    @property
    def stream(self):
        def remote(request):
            self.requests.append(request)
            pieces = self.pieces(request) if callable(self.pieces) else self.pieces
            chunks = [GenerationChunk(text=p) for p in pieces]
            usage = self.usage(request) if callable(self.usage) else self.usage
            chunks.append(GenerationChunk(finish_reason=self.finish, usage=usage))
            self.streams.append(FakeStream(chunks, self.fail, self.delay_s, self.silent, self))
            return self.streams[-1]
        return SimpleNamespace(remote=remote)


class ReadyStatus:
    """ModelStatus without Ray Serve: every model ready with one replica."""

    app_name, present, reasons = None, {}, {}

    def __init__(self, models: Sequence[str] = (MODEL,)):
        self.models = tuple(models)

    async def states(self, fresh=False, stale_ok=False):
        return {name: ("ready", 1) for name in self.models}


def app_over(replica=None, models: Sequence[str] = (MODEL,), **settings):
    """The app with the shipped models.json's `models`, each answered by `replica`; `settings`
    override the defaults (API_KEYS is KEY unless given)."""
    return create_app(Settings(**{"api_keys": KEY, **settings}), router_over(replica, models), None, ReadyStatus(models))


def router_over(replica=None, models: Sequence[str] = (MODEL,)) -> ModelRouter:
    """The shipped models.json's `models`, each answered by `replica`; the first is the default."""
    shipped = load_models_file(ROOT / "models.json").models
    return ModelRouter({name: ModelEntry(name, shipped[name], replica) for name in models}, models[0])


def run(app, scenario, client_ip: str = "127.0.0.1", raise_app_exceptions: bool = True):
    """Run `scenario(client)` against `app` in-process; returns what the scenario returns.
    `raise_app_exceptions=False`: an unhandled exception is answered (500) as the server answers
    it, instead of raised in the test (Starlette re-raises it after answering)."""
    async def main():
        transport = httpx.ASGITransport(app=app, client=(client_ip, 4000), raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers={"X-API-Key": KEY}) as client:
            return await scenario(client)
    return asyncio.run(main())
