"""What the transformers and ONNX text backends share: the tokenizer's prompt and chat template, and
serving through `PaddedBatchEngine` (continuous batching of up to `parallel` sequences per replica).

`parallel` defaults to what `kv_cache_budget` holds at `context_length` tokens a sequence (at most
16), as for gguf models; `parallel: 1` decodes one request at a time (the others wait in line).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import AsyncIterator, Optional

from core.errors import InvalidRequest
from core.types import GenerationChunk, GenerationRequest
from deployments.backends.base import Backend
from deployments.engine.admission import WaitingRoom
from deployments.engine.loop import stream_sequence
from deployments.engine.padded_engine import PaddedBatchEngine, TensorModel, TextSequence
from deployments.engine.sequence import Outlet
from deployments.engine.sizing import auto_parallel
from deployments.engine.text import check_logit_bias, token_budget
from deployments.memory import parse_size

logger = logging.getLogger("aicore.backend")


class TensorTextBackend(Backend):
    """A text backend whose `load` sets `tokenizer` and `eos_ids`, then calls `start_engine`."""

    tokenizer = None
    eos_ids: set[int] = set()
    engine: Optional[PaddedBatchEngine] = None

    def start_engine(self, model: TensorModel, kv_bytes_per_token: Optional[int], batchable: bool = True) -> None:
        config = self.config
        parallel = config.parallel or auto_parallel(kv_bytes_per_token, config.context_length,
                                                    parse_size(config.kv_cache_budget))
        if not batchable and parallel > 1:
            logger.warning("this model's cache cannot be batched: one sequence at a time",
                           extra={"model": self.model_name})
            parallel = 1
        room = WaitingRoom(slots=parallel, max_queued=config.max_queued,
                           max_wait_s=config.max_queue_wait_s or self.request_timeout_s,
                           interactive_reserve=config.reserve(parallel))
        self.engine = PaddedBatchEngine(model, model_name=self.model_name, parallel=parallel,
                                        batch_tokens=config.batch_tokens, room=room)
        logger.info("engine ready", extra={"model": self.model_name, "parallel": parallel,
                                           "kv_bytes_per_token": kv_bytes_per_token})

    @property
    def parallel(self) -> int:
        return self.engine.parallel

    @property
    def queued(self) -> int:
        return self.engine.waiting if self.engine is not None else 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is None:
            return self.tokenizer(request.prompt or "").input_ids
        template = self.config.chat_template or self.tokenizer.chat_template  # models.json's first
        if not template:
            raise InvalidRequest(f"model {self.model_name!r} has no chat template: use completions", param="messages")
        text = self.tokenizer.apply_chat_template([dict(m) for m in request.messages], tokenize=False,
                                                  add_generation_prompt=True, chat_template=template,
                                                  tools=[dict(t) for t in request.tools] if request.tools else None)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _check_adapter(self, request: GenerationRequest) -> None:
        if request.adapter is not None and request.adapter not in self.adapter_paths:
            raise InvalidRequest(f"model {self.model_name!r} has no adapter {request.adapter!r}", param="model")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._check_adapter(request)
        ids = self.prompt_ids(request)
        if not ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        s = request.sampling
        budget = token_budget(self.model_name, self.config.context_length, len(ids), s,
                              "prompt" if request.messages is None else "messages")
        check_logit_bias(s.logit_bias, len(self.tokenizer), self.model_name)
        queue: asyncio.Queue = asyncio.Queue()
        sequence = TextSequence.create(
            self._decode, self.eos_ids, request_id=request.request_id, prompt=ids, budget=budget, sampling=s,
            stops=list(s.stop), adapter=request.adapter, priority=request.priority,
            outlet=Outlet(asyncio.get_running_loop(), queue.put_nowait), tenant=request.key_id or "-")
        async with aclosing(stream_sequence(self.engine, sequence, queue, self.note_cancelled)) as chunks:
            async for chunk in chunks:  # closing this stream (client gone) closes that one at once
                yield chunk

    def engine_report(self) -> Optional[dict]:
        return self.engine.report() if self.engine is not None else None

    def health(self) -> None:
        if self.engine is not None and self.engine.failure is not None:
            raise RuntimeError(f"engine of {self.model_name!r} stopped: {self.engine.failure!r}")

    def unload(self) -> None:
        if self.engine is not None:
            self.engine.close()
