"""One WebSocket connection of `WS /api/v1/ws`: authenticate, then serve requests concurrently.

The WebSocket adapter of the one admission path (serve_app/pipeline.py): the key is checked
at connect and again for every request message (a key revoked while the socket is open is
refused at its next request), and each request takes the key's limits and records its usage
like an HTTP request: its own access-log line, metrics event and request id. Every request runs in
its own task; the socket closing (or a `cancel` message) cancels the task, and
`Generation.chunks()` then cancels the model's stream.

Before auth (docs/security.md#websockets-before-auth): the replica's `WsGate` (gate.py) counts
the sockets not yet authenticated, per client address and in total, and refuses an address whose
authentications keep failing (counted in the shared store). A socket without a key in its
handshake must send `auth` first, within WS_AUTH_TIMEOUT_S, in at most WS_AUTH_FRAME_BYTES:
the size is checked on the raw frame and only an `auth` message is ever parsed before auth.
Every message is at most WS_MAX_FRAME_BYTES (1009), the limit Ray's proxy applies first
(serve_app/http/proxy_ws.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Callable, Optional, Union

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from core.errors import AICoreError, AuthenticationFailed, BodyTooLarge, InvalidRequest, RequestCancelled
from core.logs import request_id_var
from serve_app.access.auth import Principal
from serve_app.error_mapping import error_body, to_aicore_error, validation_error
from serve_app.pipeline import Outcome, Pipeline, RequestContext, status_of
from serve_app.protocol.ws import (
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
from serve_app.replies import chat_logprobs, tool_fields
from serve_app.request_log import record_request
from serve_app.serving import GenerationService, RequestOptions
from serve_app.websocket.gate import (  # noqa: F401 (WsLimits, TRY_AGAIN_LATER: imported from here too)
    AUTH_FIRST,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Refused,
    WsGate,
    WsLimits,
)

logger = logging.getLogger("aicore.ws")

MAX_IN_FLIGHT = 8  # requests one socket may have running at once
ROUTE = "/api/v1/ws"
class WsSession:
    def __init__(self, websocket: WebSocket, service: GenerationService, pipeline: Pipeline,
                 gate: Optional[WsGate] = None, record: Optional[Callable] = None):
        self.ws = websocket
        self.service = service
        self.pipeline = pipeline
        self.gate = gate or WsGate(WsLimits())
        self.limits = self.gate.limits
        self.record = record  # the metrics recorder's `record`: one event per request message
        self.outcome = Outcome.of(websocket)  # the connection's: client address resolved by the guard
        self.connection_id = request_id_var.get()
        self.key: Optional[str] = None  # as presented: checked again for every request
        self.tasks: dict[str, asyncio.Task] = {}
        self._send_lock = asyncio.Lock()
        self.principal: Optional[Principal] = None

    def _context(self) -> RequestContext:
        return RequestContext("websocket", self.key, self.outcome.client_ip, Outcome(client_ip=self.outcome.client_ip))

    async def run(self) -> None:
        address = self.outcome.client_ip
        try:
            await self.gate.enter(address)
        except Refused as refused:  # accepted to be closed: a browser sees the code and reason, not a 403
            try:
                await self.ws.accept()
            except Exception:  # already gone
                return
            return await self._close(refused)
        try:
            await self.ws.accept()
            if not await self._authenticate():
                return
        except WebSocketDisconnect as gone:  # the client left before authenticating
            if gone.code == MESSAGE_TOO_BIG:  # Ray's proxy cut a first message over WS_MAX_FRAME_BYTES
                await self.gate.failed(address)
            return
        finally:
            self.gate.leave(address)
        try:
            router = self.service.router
            models = self.principal.allowed_models(router.entries)  # a web token's models only
            default = self.principal.default_model or router.default_model
            await self._send(WsReady(models=models, default_model=default if default in models or not models
                                     else models[0]))
            while True:
                await self._dispatch(await self._receive(self.limits.max_frame_bytes))
        except WebSocketDisconnect:
            pass
        except Refused as refused:  # a message over WS_MAX_FRAME_BYTES
            await self._close(refused)
        finally:
            await self._cancel_all()

    async def _authenticate(self) -> bool:
        """The key from the handshake headers, else from a first message that must be a small `auth`
        (its size checked before it is parsed, and nothing but `auth` parsed), then admitted.
        False: the socket was closed with the reason (and the address's failure counted)."""
        try:
            self.key = self.pipeline.auth.presented(self.ws)
            if self.key is None:
                try:
                    raw = await asyncio.wait_for(self._receive(self.limits.auth_frame_bytes, first=True),
                                                 self.limits.auth_timeout_s)
                except asyncio.TimeoutError:
                    message = f"no auth message within {self.limits.auth_timeout_s:g}s"
                    raise Refused(POLICY_VIOLATION, message, AuthenticationFailed(message, code="auth_timeout")) from None
                self.key = _auth_key(raw)
            self.principal = await self.pipeline.check(self._context(), "inference")  # no request yet
        except Refused as refused:
            await self.gate.failed(self.outcome.client_ip)
            await self._close(refused)
            return False
        except AICoreError as error:
            if isinstance(error, AuthenticationFailed):  # a wrong key, not a refused good one
                await self.gate.failed(self.outcome.client_ip)
            await self._close(Refused(POLICY_VIOLATION, "authentication failed", error))
            return False
        self.outcome.key_id = self.principal.key_id
        return True

    async def _receive(self, limit: int, first: bool = False) -> str:
        """The next message's text, its size checked before anything reads it (a binary message is
        taken as UTF-8 text). Over `limit`: Refused (1008 for a first message, else 1009)."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text, data = message.get("text"), message.get("bytes")
        size = _size(text, data, limit)
        if size > limit and first:
            reason = f"the first message must be auth, at most {limit} bytes"
            raise Refused(POLICY_VIOLATION, reason, AuthenticationFailed(
                f"the first message is over the {limit} bytes an auth message may take: {AUTH_FIRST}",
                code="auth_required"))
        if size > limit:
            raise Refused(MESSAGE_TOO_BIG, f"message over {limit} bytes",
                          BodyTooLarge(f"a message is over the limit of {limit} bytes"))
        if text is None:
            text = (data or b"").decode("utf-8", "replace")
        return text

    async def _close(self, refused: Refused) -> None:
        await self._send_error(None, refused.error)
        try:
            await self.ws.close(refused.code, refused.reason)
        except Exception:  # already gone
            logger.debug("could not close the socket", exc_info=True)

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
        ended: Optional[BaseException] = asyncio.CancelledError()  # until it ends otherwise: the client left
        started, context = time.monotonic(), self._context()
        request_id = uuid.uuid4().hex
        request_id_var.set(request_id)  # this task's own: its error bodies and its access-log line
        try:
            admission = await self.pipeline.admit(context, "inference")  # the key as it stands now
            # Settled when the block ends, before the last message goes out (as the HTTP guard
            # settles before the last body byte): a client reading its usage right after `done`
            # or `error` finds the request counted.
            async with admission.settling():
                prompt = message.prompt if isinstance(message, WsGenerate) else None
                messages = [m.as_dict() for m in message.messages] if isinstance(message, WsChat) else None
                tools = message.tool_use() if isinstance(message, WsChat) else None
                generation = await self.service.start(
                    admission, message.model, request_id, message.to_sampling_params(),
                    prompt=prompt, messages=messages, priority=message.priority, tools=tools,
                    options=self._options(admission.principal, getattr(message, "session_id", None)),
                )
                answer = generation.tool_answer()  # tokens: the text answer only
                parts = []
                async for chunk in generation.chunks():
                    text = answer.text(answer.feed(chunk.text)) if answer is not None else chunk.text
                    parts.append(text)
                    if text or chunk.logprobs:
                        await self._send(WsToken(id=message.id, text=text, logprobs=chat_logprobs(chunk.logprobs)))
                if answer is not None and (text := answer.text(answer.finish())):
                    await self._send(WsToken(id=message.id, text=text))
            usage = generation.usage
            ended = None
            fields = {"response": "".join(parts), "finish_reason": generation.finish_reason}
            if answer is not None:
                fields = tool_fields(answer, generation.finish_reason)
            await self._send(WsDone(
                id=message.id, model=generation.entry.name, **fields,
                usage=WsUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              total_tokens=usage.total_tokens),
                processing_time=round(time.monotonic() - generation.started, 4),
            ))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            ended = failure = to_aicore_error(error)
            context.outcome.error_type, context.outcome.error_code = failure.type, failure.code
            await self._send_error(message.id, error)
        finally:
            self.tasks.pop(message.id, None)
            record_request(self.record, context.outcome, method="WS", route=ROUTE, status=status_of(ended),
                           latency=time.monotonic() - started, ws_id=message.id, connection_id=self.connection_id)

    @staticmethod
    def _options(principal: Principal, session_id: Optional[str]) -> Optional[RequestOptions]:
        """A chat message's `session_id` continues that session of the key, as over HTTP."""
        if session_id is None:
            return None
        return RequestOptions(endpoint="ws", tenant=principal.key_id, owner=principal.key_id, session_id=session_id)

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


def _size(text: Optional[str], data: Optional[bytes], limit: int) -> int:
    """A message's size in bytes as far as `limit` is concerned: over it exactly when the message
    is. A text is encoded only when its length cannot decide (UTF-8 takes 1 to 4 bytes a character)."""
    if text is None:
        return len(data or b"")
    if len(text) > limit or len(text) * 4 <= limit or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _auth_key(raw: str) -> str:
    """The key of a first message that is an `auth` message (it is small: its size was checked);
    anything else is refused without being read as what it claims to be."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "auth":
        raise Refused(POLICY_VIOLATION, 'the first message must be {"type": "auth", ...}',
                      AuthenticationFailed(AUTH_FIRST, code="auth_required"))
    try:
        return WsAuth.model_validate(data).api_key
    except ValidationError:
        raise Refused(POLICY_VIOLATION, "malformed auth message", AuthenticationFailed(
            'an auth message is {"type": "auth", "api_key": "<key>"}', param="api_key", code="auth_required")) from None


def _id_of(raw: str) -> Optional[str]:
    """The request id of a message that failed validation, if one can be read."""
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
