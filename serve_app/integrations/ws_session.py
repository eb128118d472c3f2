"""One WebSocket connection of `WS /api/v1/ws`: authenticate, then serve requests concurrently.

The WebSocket adapter of the one admission path (serve_app/pipeline.py): the key is checked
at connect and again for every request message (a key revoked while the socket is open is
refused at its next request), and each request takes the key's limits and records its usage
like an HTTP request. Every request runs in its own task; the socket closing (or a `cancel`
message) cancels the task, and `Generation.chunks()` then cancels the model's stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Optional, Union

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from core.errors import AICoreError, AuthenticationFailed, InvalidRequest, RequestCancelled
from serve_app.access.auth import Principal
from serve_app.http.errors import validation_error, error_body, to_aicore_error
from serve_app.pipeline import CLIENT_GONE, Outcome, Pipeline, RequestContext
from serve_app.http.protocol.ws import (
    CLIENT_MESSAGES,
    WsAuth,
    WsChat,
    WsClientMessage,
    WsDone,
    WsError,
    WsGenerate,
    WsReady,
    WsToken,
    WsUsage,
)
from serve_app.serving import GenerationService

logger = logging.getLogger("aicore.ws")

AUTH_TIMEOUT_S = 60
MAX_IN_FLIGHT = 8  # requests one socket may have running at once
POLICY_VIOLATION = 1008  # WebSocket close code for a failed authentication


class WsSession:
    def __init__(self, websocket: WebSocket, service: GenerationService, pipeline: Pipeline):
        self.ws = websocket
        self.service = service
        self.pipeline = pipeline
        self.outcome = Outcome.of(websocket)  # the connection's: client address resolved by the guard
        self.key: Optional[str] = None  # as presented: checked again for every request
        self.tasks: dict[str, asyncio.Task] = {}
        self._send_lock = asyncio.Lock()
        self.principal: Optional[Principal] = None

    def _context(self) -> RequestContext:
        return RequestContext("websocket", self.key, self.outcome.client_ip, Outcome(client_ip=self.outcome.client_ip))

    async def run(self) -> None:
        await self.ws.accept()
        try:
            if not await self._authenticate():
                return
            router = self.service.router
            models = self.principal.allowed_models(router.entries)  # a web token's models only
            default = self.principal.default_model or router.default_model
            await self._send(WsReady(models=models, default_model=default if default in models or not models
                                     else models[0]))
            while True:
                await self._dispatch(await self.ws.receive_text())
        except WebSocketDisconnect:
            pass
        finally:
            await self._cancel_all()

    async def _authenticate(self) -> bool:
        try:
            self.key = self.pipeline.auth.presented(self.ws)
            if self.key is None:
                raw = await asyncio.wait_for(self.ws.receive_text(), AUTH_TIMEOUT_S)
                message = self._parse(raw)
                if not isinstance(message, WsAuth):
                    raise AuthenticationFailed(
                        'send {"type": "auth", "api_key": "..."} first, or the key in the handshake headers'
                    )
                self.key = message.api_key
            self.principal = (await self.pipeline.admit(self._context(), "inference")).principal
        except (AICoreError, asyncio.TimeoutError) as error:
            if isinstance(error, asyncio.TimeoutError):
                error = AuthenticationFailed(f"no auth message within {AUTH_TIMEOUT_S}s")
            await self._send_error(None, error)
            await self.ws.close(POLICY_VIOLATION, "authentication failed")
            return False
        self.outcome.key_id = self.principal.key_id
        return True

    def _parse(self, raw: str) -> WsClientMessage:
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise InvalidRequest(f"malformed JSON message: {error}", code="invalid_json") from None
        kind = data.get("type") if isinstance(data, dict) else None
        model = CLIENT_MESSAGES.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise InvalidRequest(f"type must be one of {', '.join(CLIENT_MESSAGES)}", param="type")
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise validation_error(RequestValidationError(error.errors())) from None

    async def _dispatch(self, raw: str) -> None:
        try:
            message = self._parse(raw)
        except AICoreError as error:
            request_id = _id_of(raw)
            return await self._send_error(request_id, error)
        if isinstance(message, WsAuth):
            return await self._send_error(None, InvalidRequest("already authenticated", param="type"))
        if message.type == "cancel":
            return await self._cancel(message.id)
        if message.id in self.tasks:
            return await self._send_error(message.id, InvalidRequest(f"request {message.id!r} is still running", param="id"))
        if len(self.tasks) >= MAX_IN_FLIGHT:
            return await self._send_error(message.id, InvalidRequest(
                f"at most {MAX_IN_FLIGHT} requests may run at once on one socket", code="too_many_requests"))
        if message.format != "text":
            return await self._send_error(message.id, InvalidRequest("format 'email' is not available here", param="format"))
        self.tasks[message.id] = asyncio.create_task(self._serve(message))

    async def _serve(self, message: Union[WsGenerate, WsChat]) -> None:
        admission, status = None, CLIENT_GONE
        try:
            admission = await self.pipeline.admit(self._context(), "inference")  # the key as it stands now
            prompt = message.prompt if isinstance(message, WsGenerate) else None
            messages = [m.as_dict() for m in message.messages] if isinstance(message, WsChat) else None
            generation = await self.service.start(
                admission, message.model, uuid.uuid4().hex, message.to_sampling_params(),
                prompt=prompt, messages=messages, priority=message.priority,
            )
            parts = []
            async for chunk in generation.chunks():
                if chunk.text:
                    parts.append(chunk.text)
                    await self._send(WsToken(id=message.id, text=chunk.text))
            usage = generation.usage
            status = 200
            await _settle(admission, status)
            await self._send(WsDone(
                id=message.id, model=generation.entry.name, response="".join(parts),
                finish_reason=generation.finish_reason,
                usage=WsUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              total_tokens=usage.total_tokens),
                processing_time=round(time.monotonic() - generation.started, 4),
            ))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            status = to_aicore_error(error).status
            await _settle(admission, status)
            await self._send_error(message.id, error)
        finally:  # the client left mid-answer (the task was cancelled): settle what it got
            self.tasks.pop(message.id, None)
            await _settle(admission, status)

    async def _cancel(self, request_id: str) -> None:
        task = self.tasks.get(request_id)
        if task is None:
            return await self._send_error(request_id, InvalidRequest(f"no request {request_id!r} is running", param="id"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._send_error(request_id, RequestCancelled(f"request {request_id!r} was cancelled"))

    async def _send(self, payload: BaseModel) -> None:
        async with self._send_lock:
            await self.ws.send_text(payload.model_dump_json())

    async def _send_error(self, request_id: Optional[str], error: BaseException) -> None:
        try:
            await self._send(WsError(id=request_id, error=error_body(to_aicore_error(error))["error"]))
        except Exception:  # the socket is gone: nobody to tell
            logger.debug("could not send an error message", exc_info=True)

    async def _cancel_all(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _id_of(raw: str) -> Optional[str]:
    """The request id of a message that failed validation, if one can be read."""
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


async def _settle(admission, status: int) -> None:
    """Settle a request's admission (limits, usage) before its last message goes out, as the HTTP
    guard does before its last body message: a client that reads its usage, or closes the socket,
    right after `done` or `error` finds the request counted. Once only (later calls are no-ops);
    shielded, so the socket's close, which cancels the task, cannot cut the usage write."""
    if admission is not None:
        await asyncio.shield(admission.close(status))
