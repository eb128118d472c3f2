"""GGUF backend: llama.cpp through llama-cpp-python's low-level API, with continuous batching.

Requests are tokenized here (on the replica's event loop: errors such as a prompt longer than
the context come back before anything queues) and handed to `LlamaBatchEngine`, which decodes
up to `parallel` sequences per `llama_decode` (see deployments/engine/llama_engine.py).

LoRA adapters (GGUF LoRA files, see scripts/convert_to_gguf.py) load on first use, at most
`max_adapters` at a time (never one a running sequence uses); sequences of different adapters
run in alternate steps.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from contextlib import aclosing
from typing import AsyncIterator

from core.errors import InvalidRequest
from core.types import GenerationChunk, GenerationRequest
from deployments.backends.base import Backend, register_backend
from deployments.engine.admission import WaitingRoom
from deployments.engine.llama_engine import Adapters, LlamaBatchEngine
from deployments.engine.loop import stream_sequence
from deployments.engine.sequence import Outlet, Sequence
from deployments.engine.sizing import auto_parallel, kv_bytes_per_token
from deployments.engine.text import check_logit_bias, token_budget
from deployments.memory import parse_size

logger = logging.getLogger("aicore.backend.gguf")


def _named_formatter(name: str):
    """llama.cpp's built-in chat formatter for a name such as `gemma` or `llama-2`."""
    from llama_cpp import llama_chat_format

    wanted = name.replace("-", "").replace("_", "").lower()
    for attr, fn in inspect.getmembers(llama_chat_format, inspect.isfunction):
        if attr.startswith("format_") and attr[7:].replace("_", "").lower() == wanted:
            return fn
    raise ValueError(f"unknown chat_format {name!r}")


@register_backend("gguf")
class GGUFBackend(Backend):
    supports_adapters = True

    def load(self) -> None:
        import llama_cpp
        from llama_cpp import _logger, llama_chat_format
        from llama_cpp._internals import LlamaModel

        _logger.set_verbose(False)  # llama.cpp's own log lines (graph and buffer details) only on errors
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = -1 if self.config.device == "cuda" else 0
        if not self.config.mmap:  # read, not mapped: a repacked K-quant is then resident once, not twice
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        self.model = LlamaModel(path_model=str(self.weights), params=params, verbose=False)
        metadata = self.model.metadata()
        config = self.config
        self.kv_bytes_per_token = kv_bytes_per_token(metadata)
        budget = parse_size(config.kv_cache_budget)
        parallel = config.parallel or auto_parallel(self.kv_bytes_per_token, config.context_length, budget)
        slot_bytes = (self.kv_bytes_per_token or 0) * config.context_length
        if config.parallel is None and slot_bytes > budget:  # one slot is the least a replica can have
            logger.warning("one slot of %d tokens needs %.2f GiB of KV cache, over kv_cache_budget %s: "
                           "lower context_length or raise kv_cache_budget", config.context_length,
                           slot_bytes / 2**30, config.kv_cache_budget, extra={"model": self.model_name})
        room = WaitingRoom(slots=parallel, max_queued=config.max_queued,
                           max_wait_s=config.max_queue_wait_s or self.request_timeout_s,
                           interactive_reserve=config.reserve(parallel))
        adapters = Adapters(llama_cpp, self.model.model, self.adapter_paths, config.max_adapters, self.model_name)
        self.engine = LlamaBatchEngine(
            llama_cpp, self.model.model, model_name=self.model_name, parallel=parallel,
            context_length=config.context_length, batch_tokens=max(config.batch_tokens, parallel),
            threads=config.threads, room=room, adapters=adapters, prefix_reuse=config.prefix_reuse,
            saved_prompt_bytes=parse_size(config.saved_prompt_budget),
        )
        logger.info("engine ready", extra={"model": self.model_name, "parallel": parallel,
                                           "kv_bytes_per_token": self.kv_bytes_per_token})
        template = config.chat_template or metadata.get("tokenizer.chat_template")  # models.json's first
        self._formatter = None
        if template:
            eos, bos = self.model.token_eos(), self.model.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.model.token_get_text(bos) if bos != -1 else "",
            )
        elif config.chat_format:
            self._formatter = _named_formatter(config.chat_format)

    @property
    def queued(self) -> int:
        return len(self.engine.room)

    @property
    def parallel(self) -> int:
        return self.engine.parallel

    def loaded_adapters(self) -> list[str]:
        return list(self.engine.adapters.loaded)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], list[str]]:
        if request.messages is None:
            return self.model.tokenize((request.prompt or "").encode("utf-8"), add_bos=True, special=False), []
        if self._formatter is None:
            raise InvalidRequest(
                f"model {self.model_name!r} has no chat template: use completions, "
                "or set chat_template or chat_format in models.json",
                param="messages",
            )
        tools = {"tools": [dict(t) for t in request.tools]} if request.tools else {}  # templates that render them
        result = self._formatter(messages=[dict(m) for m in request.messages], **tools)
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        tokens = self.model.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        return tokens, stops

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        tokens, template_stops = self._prompt(request)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        s = request.sampling
        budget = token_budget(self.model_name, self.config.context_length, len(tokens), s,
                              "prompt" if request.messages is None else "messages")
        check_logit_bias(s.logit_bias, self.engine.n_vocab, self.model_name)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        sequence = Sequence(request_id=request.request_id, prompt=tokens, budget=budget, sampling=s,
                            stops=list(s.stop) + template_stops, adapter=request.adapter,
                            priority=request.priority, outlet=Outlet(loop, queue.put_nowait),
                            tenant=request.key_id or "-", cache_scope=request.cache_scope,
                            conversation=request.conversation)
        async with aclosing(stream_sequence(self.engine, sequence, queue, self.note_cancelled)) as chunks:
            async for chunk in chunks:  # closing this stream (client gone) closes that one at once
                yield chunk

    def forget_conversation(self, conversation: str) -> int:
        return self.engine.forget(conversation)

    def engine_report(self) -> dict:
        return self.engine.report()

    def health(self) -> None:
        if self.engine.failure is not None:
            raise RuntimeError(f"engine of {self.model_name!r} stopped: {self.engine.failure!r}")

    def unload(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
        model = getattr(self, "model", None)
        if model is not None:
            model.close()
