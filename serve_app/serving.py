"""Serving logic shared by both API families: no HTTP here.

Resolve the model, check limits, call the model's handle, and hand back either the
whole result or a stream whose first chunk has already arrived (so that an error
before the first token can still become a proper HTTP error, not a broken stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Optional

from core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelUnavailable,
    PromptTooLong,
    StoreUnavailable,
    TooManyMessages,
)
from core.settings import Settings
from core.token_bounds import token_bound
from core.types import (
    EmbeddingResult,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from serve_app.access.content_filter import ContentPolicy
from serve_app.choices import Choices
from serve_app.generation import Generation, OnClose, OnComplete, next_chunk
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.pipeline import Admission
from serve_app.protocol.api_v1 import MAX_EMBEDDING_INPUTS
from serve_app.state.cache import ResponseCache, cache_key, wants_cache
from serve_app.state.sessions import SessionStore, SessionTurn
from serve_app.tool_calls import ToolUse, for_template, message_text

logger = logging.getLogger("aicore.serving")

# Room left for the chat template's own tokens when trimming a session to the context.
TEMPLATE_MARGIN_TOKENS = 32


@dataclass(frozen=True)
class RequestOptions:
    """Per-request choices that are not generation parameters."""

    endpoint: str
    tenant: str = "-"
    cache: Optional[bool] = None  # True: cache even if not deterministic; False: bypass
    no_cache: bool = False  # Cache-Control: no-cache
    session_id: Optional[str] = None
    owner: str = "-"  # the caller's key id: sessions are per key


Gate = Callable[["ModelEntry"], Awaitable[None]]


async def admit(gate: Optional[Gate], entry: "ModelEntry") -> None:
    """Let the lifecycle gate hold or refuse a request before it reaches the model's replicas."""
    if gate is not None:
        await gate(entry)


class GenerationService:
    def __init__(self, router: ModelRouter, settings: Settings, cache: Optional[ResponseCache] = None,
                 sessions: Optional[SessionStore] = None):
        self.router = router
        self.settings = settings
        self.cache = cache
        self.sessions = sessions
        self.policy = ContentPolicy.from_settings(settings)
        self.gate: Optional[Gate] = None  # ModelControl.before_request: disabled, unloading, memory budget
        self.cache_gate: Optional[Gate] = None  # ModelControl.refuse_disabled: before the response cache

    def _check(self, entry: ModelEntry, request: GenerationRequest) -> None:
        if request.prompt is not None:
            size, param = len(request.prompt), "prompt"
        else:
            if len(request.messages or ()) > self.settings.max_messages:
                raise TooManyMessages(
                    f"{len(request.messages)} messages; the limit is {self.settings.max_messages}", param="messages"
                )
            size, param = sum(len(message_text(m)) for m in request.messages or ()), "messages"
        if size > self.settings.max_prompt_length:
            raise PromptTooLong(
                f"{param} is {size} characters; the limit is {self.settings.max_prompt_length}", param=param
            )
        wanted = request.sampling.max_tokens
        if not request.sampling.fit_max_tokens and wanted is not None and wanted >= entry.config.context_length:
            raise ContextLengthExceeded(
                f"max_tokens {wanted} must be below model {entry.name!r}'s context of "
                f"{entry.config.context_length} tokens",
                param="max_tokens",
            )
        texts = [request.prompt] if request.prompt is not None else [message_text(m) for m in request.messages or ()]
        self.policy.check_prompt(texts, param)
        if request.sampling.grammar is not None and entry.config.type != "gguf":
            raise InvalidRequest(
                f"model {entry.name!r} ({entry.config.type}) cannot constrain its answer: response_format "
                "json_object or json_schema and tools need a GGUF model", param="response_format")
        if request.sampling.logprobs is not None and entry.config.type != "gguf":
            raise InvalidRequest(f"model {entry.name!r} ({entry.config.type}) does not return log probabilities "
                                 "yet: logprobs need a GGUF model", param="logprobs")

    def _resolve(self, admission: Admission, model: Optional[str], sampling: SamplingParams,
                 tools: Optional[ToolUse]) -> tuple[ModelEntry, Optional[str], SamplingParams, Optional[ToolUse]]:
        """The one place a request is resolved: its model entry and adapter (refused unless the key
        may use them), its answer length (the model's default, or what the context leaves), and its
        tools in the model's format with the answer constrained to them. Replicas resolve nothing again."""
        principal = admission.principal
        entry, adapter = self.router.resolve_adapter(model or principal.default_model, "generate", principal.may_use)
        sampling = with_answer_tokens(sampling, entry)
        if tools is not None:
            tools = tools.for_model(entry.tool_format)  # the answer's format follows the chat template
            sampling = tools.constrain(sampling)  # a bad schema is a 400 before anything is counted
        return entry, adapter, sampling, tools

    async def _begin(self, options: RequestOptions) -> SessionTurn:
        if self.sessions is None:
            raise InvalidRequest("sessions are not enabled on this server", param="session_id")
        return await self.sessions.begin(options.owner, options.session_id)

    def _fit(self, entry: ModelEntry, turn: SessionTurn, sampling: SamplingParams,
             reserved: int = 0) -> tuple[list[dict], OnComplete]:
        """The session's messages trimmed to the context (counted from earlier turns' usage: no call
        to the model) less `reserved` tokens (the tools' description), and the saver of the answer."""
        budget = entry.config.context_length - sampling.max_tokens - TEMPLATE_MARGIN_TOKENS - reserved
        messages = turn.fit(budget, self.settings.max_messages)

        async def save(result: GenerationResult) -> None:
            try:
                await turn.save(entry.name, result)
            except StoreUnavailable:
                logger.error("session %s not saved: store unavailable", turn.session_id)

        return messages, save

    async def start(
        self,
        admission: Admission,
        model: Optional[str],
        request_id: str,
        sampling: SamplingParams,
        *,
        prompt: Optional[str] = None,
        messages: Optional[list[dict]] = None,
        options: Optional[RequestOptions] = None,
        priority: Optional[str] = None,  # the request's own: "interactive" or "batch"
        tools: Optional[ToolUse] = None,
    ) -> Generation:
        """Admit (model, limits with prompt + max_tokens reserved), then start the generation.
        With `tools` the answer is constrained to calls (or a text answer) and the tools are
        described in the conversation after the session's history is added, so a session keeps
        the conversation, not the description; the channel reads the answer (tool_calls.ToolAnswer)."""
        principal = admission.principal
        entry, adapter, sampling, tools = self._resolve(admission, model, sampling, tools)
        key_id = principal.key_id
        options = options or RequestOptions(endpoint="-", tenant=key_id, owner=key_id)
        turn = await self._begin(options) if options.session_id is not None and messages is not None else None
        try:
            generation = await self._start(admission, entry, adapter, request_id, sampling, prompt, messages,
                                           options, priority, turn, tools)
        except BaseException:
            if turn is not None:
                await turn.release()
            raise
        generation.admission = admission
        return generation

    async def _start(self, admission: Admission, entry: ModelEntry, adapter: Optional[str], request_id: str,
                     sampling: SamplingParams, prompt: Optional[str], messages: Optional[list[dict]],
                     options: RequestOptions, priority: Optional[str], turn: Optional[SessionTurn],
                     tools: Optional[ToolUse] = None) -> Generation:
        if turn is not None:
            messages = turn.combine(messages)
        described = tools.described() if tools is not None and messages is not None else ""
        texts = [prompt] if prompt is not None else [message_text(m) for m in messages or ()] + [described] * bool(described)
        prompt_estimate = token_bound(texts)
        await admission.limit(entry.name, prompt_estimate + sampling.max_tokens)
        callbacks: list[OnComplete] = []
        if turn is not None:
            messages, save = self._fit(entry, turn, sampling, token_bound([described]) if described else 0)
            callbacks.append(save)
        if messages is not None:
            messages = for_template(messages, entry.tool_format is not None)
        if described:
            messages = tools.prompt(messages)
        request = self._request(admission, adapter, request_id, sampling, prompt, messages, priority,
                                turn.conversation if turn is not None else None, tools)
        self._check(entry, request)
        generation = await self._generate(entry, adapter, request, options, callbacks,
                                          (turn.release,) if turn is not None else ())
        generation.prompt_estimate, generation.tools = prompt_estimate, tools
        return self._observe(generation, prompt, messages)

    def _request(self, admission: Admission, adapter: Optional[str], request_id: str, sampling: SamplingParams,
                 prompt: Optional[str], messages: Optional[list[dict]], priority: Optional[str],
                 conversation: Optional[str], tools: Optional[ToolUse] = None) -> GenerationRequest:
        key_id = admission.principal.key_id
        return GenerationRequest(
            adapter=adapter,
            request_id=request_id,
            sampling=sampling,
            prompt=prompt,
            messages=tuple(messages) if messages is not None else None,
            key_id=key_id,
            priority=admission.priority(priority),
            cache_scope="shared" if self.settings.prefix_cache_scope == "shared" else key_id,
            conversation=conversation,
            tools=tools.template_tools() if tools is not None else None,
        )

    async def start_choices(self, admission: Admission, model: Optional[str], request_id: str,
                            sampling: SamplingParams, n: int, *, prompt: Optional[str] = None,
                            messages: Optional[list[dict]] = None, options: Optional[RequestOptions] = None,
                            priority: Optional[str] = None, tools: Optional[ToolUse] = None) -> Choices:
        """OpenAI's `n`: n answers to one prompt, `n x max_tokens` reserved. They reach the engine
        together, so it computes their common prompt once and copies it (its burst followers).
        With a seed, choice i samples with seed + i: different choices, repeatable as a seed is. Not
        cached (the cache keeps one answer) and not with a session (a session keeps one answer)."""
        if n == 1:
            return Choices([await self.start(admission, model, request_id, sampling, prompt=prompt, messages=messages,
                                             options=options, priority=priority, tools=tools)], admission)
        principal = admission.principal
        options = options or RequestOptions(endpoint="-", tenant=principal.key_id, owner=principal.key_id)
        if options.session_id is not None:
            raise InvalidRequest("n above 1 cannot be combined with session_id: a session keeps one answer a turn",
                                 param="n")
        entry, adapter, sampling, tools = self._resolve(admission, model, sampling, tools)
        if messages is not None:
            messages = for_template(messages, entry.tool_format is not None)
        if tools is not None and messages is not None:
            messages = tools.prompt(messages)
        prompt_estimate = token_bound([prompt] if prompt is not None else [message_text(m) for m in messages or ()])
        await admission.limit(entry.name, prompt_estimate + n * sampling.max_tokens)
        requests = [self._request(admission, adapter, f"{request_id}-{i}", _seeded(sampling, i), prompt, messages,
                                  priority, None, tools) for i in range(n)]
        self._check(entry, requests[0])
        uncached = replace(options, cache=False)
        started = await asyncio.gather(*(self._generate(entry, adapter, r, uncached, []) for r in requests),
                                       return_exceptions=True)
        failed = next((s for s in started if isinstance(s, BaseException)), None)
        if failed is not None:
            for generation in started:
                if isinstance(generation, Generation):
                    generation.cancel()
            raise failed
        for generation in started:
            generation.prompt_estimate, generation.tools = prompt_estimate, tools
            self._observe(generation, prompt, messages)
        return Choices(list(started), admission)

    async def _generate(self, entry: ModelEntry, adapter: Optional[str], request: GenerationRequest,
                        options: RequestOptions, callbacks: list[OnComplete],
                        closers: tuple[OnClose, ...] = ()) -> Generation:
        """From the response cache, or from the model: the first chunk in hand."""
        cache_state = None
        if self.cache is not None and options.session_id is None and wants_cache(request, options.cache, options.no_cache):
            key = cache_key(request, tenant=options.tenant, endpoint=options.endpoint, model=entry.name,
                            identity=entry.identity)
            await admit(self.cache_gate, entry)  # a disabled model is not answered from the cache either
            hit = await self.cache.get(key)
            if hit is not None:
                return Generation.replay(entry, hit, adapter)
            cache_state = "miss"

            async def fill(result: GenerationResult, key: str = key) -> None:
                await self.cache.put(key, result)

            callbacks.append(fill)
        await admit(self.gate, entry)
        started = time.monotonic()
        stream = entry.handle.options(stream=True).stream.remote(request)
        try:
            first = await asyncio.wait_for(next_chunk(stream), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            stream.cancel()
            raise ModelUnavailable(
                f"model {entry.name!r} did not start answering within {self.settings.request_timeout_s:g}s"
            ) from None
        except BaseException:
            stream.cancel()
            raise
        return Generation(entry, first, stream, started, tuple(callbacks), cache_state, adapter, closers)

    def _observe(self, generation: Generation, prompt: Optional[str], messages: Optional[list[dict]]) -> Generation:
        """Attach the output content screen and, with LOG_PROMPTS, the texts for the access log."""
        generation.screen = self.policy.output_screen()
        if self.settings.log_prompts:
            generation.output_text, generation.log_chars = "", self.settings.log_prompt_chars
            generation.prompt_text = prompt if prompt is not None else "\n".join(
                f"{m['role']}: {m['content']}" for m in messages or ()
            )
        return generation


def _seeded(sampling: SamplingParams, index: int) -> SamplingParams:
    return sampling if sampling.seed is None else replace(sampling, seed=(sampling.seed + index) % 2**64)


class EmbeddingService:
    def __init__(self, router: ModelRouter, settings: Settings):
        self.router = router
        self.settings = settings
        self.policy = ContentPolicy.from_settings(settings)  # the prompt filter, as for generation
        self.gate: Optional[Gate] = None

    def _check(self, texts: list[str]) -> None:
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequest(f"input has {len(texts)} items; the limit is {MAX_EMBEDDING_INPUTS}", param="input")
        for index, text in enumerate(texts):
            if not text:
                raise InvalidRequest(f"input[{index}] is empty", param="input")
            if len(text) > self.settings.max_prompt_length:
                raise PromptTooLong(
                    f"input[{index}] is {len(text)} characters; the limit is {self.settings.max_prompt_length}",
                    param="input",
                )

    async def embed(self, admission: Admission, model: Optional[str], request_id: str,
                    texts: list[str]) -> tuple[ModelEntry, EmbeddingResult]:
        entry = self.router.resolve(model, "embed", admission.principal.may_use)
        self._check(texts)
        await admission.limit(entry.name, token_bound(texts))
        self.policy.check_prompt(texts, "input")  # after the limits, as generation: a refusal counts
        admission.context.outcome.model = entry.name
        await admit(self.gate, entry)
        try:
            result = await asyncio.wait_for(
                entry.handle.embed.remote(request_id, texts), self.settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            raise ModelUnavailable(
                f"model {entry.name!r} did not answer within {self.settings.request_timeout_s:g}s"
            ) from None
        admission.charge(result.prompt_tokens, 0)
        return entry, result


def with_answer_tokens(sampling: SamplingParams, entry: ModelEntry) -> SamplingParams:
    """The one place a request's answer length is decided: the client's max_tokens, else the model's
    default_max_tokens, which the replica may cut to the room the prompt leaves (`fit_max_tokens`).
    Reservations, session trimming and the replica all read the result."""
    if sampling.max_tokens is not None:
        return sampling
    return replace(sampling, max_tokens=entry.config.default_max_tokens, fit_max_tokens=True)
