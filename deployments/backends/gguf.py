"""GGUF backend: llama-cpp-python.

Decoding is our own loop over `Llama.generate` so that token counts are exact, a
cancelled request stops within one token, and stop strings never leak into a stream.

LoRA adapters (GGUF LoRA files, see scripts/convert_to_gguf.py) load on first use with
llama.cpp's `llama_adapter_lora_init`, at most `max_adapters` at a time (least recently used
freed); the context carries the adapter of the current request, none for a base request.
The KV cache holds activations computed with one adapter, so switching adapters resets it
(no prefix reuse across adapters). Requests run one at a time on the engine thread.
"""

from __future__ import annotations

import codecs
import ctypes
import inspect
import logging
import random
import threading
from collections import OrderedDict
from typing import Any, Iterator, Optional

from deployments.backends.base import ThreadedBackend, register_backend
from deployments.backends.text import StopMatcher, token_budget
from deployments.errors import BackendFailure, InvalidRequest
from deployments.types import GenerationChunk, GenerationRequest, Usage

logger = logging.getLogger("aicore.backend.gguf")


def _named_formatter(name: str):
    """llama.cpp's built-in chat formatter for a name such as `gemma` or `llama-2`."""
    from llama_cpp import llama_chat_format

    wanted = name.replace("-", "").replace("_", "").lower()
    for attr, fn in inspect.getmembers(llama_chat_format, inspect.isfunction):
        if attr.startswith("format_") and attr[7:].replace("_", "").lower() == wanted:
            return fn
    raise ValueError(f"unknown chat_format {name!r}")


def token_bytes(llama_cpp, vocab, token: int) -> bytes:
    """One token's text. `Llama.detokenize` copies through a 32-byte buffer and drops longer tokens
    (SmolLM2 has whitespace runs of 46 bytes, for code indentation); this grows the buffer instead."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n  # llama.cpp answers -(bytes needed) when the buffer is too small


@register_backend("gguf")
class GGUFBackend(ThreadedBackend):
    supports_adapters = True

    def load(self) -> None:
        import llama_cpp
        from llama_cpp import Llama, llama_chat_format

        self._llama_cpp = llama_cpp
        self.llm = Llama(
            model_path=str(self.weights),
            n_ctx=self.config.context_length,
            n_threads=self.config.threads,
            n_threads_batch=self.config.threads,
            n_gpu_layers=-1 if self.config.device == "cuda" else 0,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            model = self.llm._model
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        elif self.config.chat_format:
            self._formatter = _named_formatter(self.config.chat_format)
        self._adapters: OrderedDict[str, Any] = OrderedDict()  # name -> llama_adapter_lora_p, LRU first
        self._active: Optional[str] = None  # the adapter set on the context (None: the base model)

    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def _use_adapter(self, name: Optional[str]) -> None:
        """Make `name` (None: the base model) the context's weights for one generation (engine thread only)."""
        lib = self._llama_cpp
        if name is not None:
            if name not in self._adapters:
                path = str(self.adapter_paths[name])
                adapter = lib.llama_adapter_lora_init(self.llm._model.model, path.encode("utf-8"))
                if not adapter:  # a file made for another base model, or not a GGUF LoRA
                    logger.error("llama.cpp could not load LoRA %s", path, extra={"model": self.model_name})
                    raise BackendFailure(f"adapter {name!r} of model {self.model_name!r} could not be loaded; "
                                         "the server log has the reason")
                self._adapters[name] = adapter
            self._adapters.move_to_end(name)
        if name != self._active:
            if name is None:
                lib.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
            else:
                adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
                lib.llama_set_adapters_lora(self.llm._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
            self._active = name
            self.llm.reset()  # the cached prefix was computed with other weights
        while len(self._adapters) > self.config.max_adapters:  # never the active one: it is the newest
            evicted, adapter = self._adapters.popitem(last=False)
            lib.llama_adapter_lora_free(adapter)
            logger.info("adapter evicted", extra={"model": self.model_name, "adapter": evicted})

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], list[str]]:
        if request.messages is None:
            return self.llm.tokenize((request.prompt or "").encode("utf-8"), add_bos=True, special=False), []
        if self._formatter is None:
            raise InvalidRequest(
                f"model {self.model_name!r} has no chat template: use completions, "
                "or set chat_format in models.json",
                param="messages",
            )
        result = self._formatter(messages=[dict(m) for m in request.messages])
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        return tokens, stops

    def generate_blocking(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationChunk]:
        tokens, template_stops = self._prompt(request)
        self._use_adapter(request.adapter)
        s = request.sampling
        budget = token_budget(self.model_name, self.llm.n_ctx(), self.config.default_max_tokens, len(tokens),
                              s.max_tokens, "prompt" if request.messages is None else "messages")
        self.llm.set_seed(s.seed if s.seed is not None else random.randint(0, 2**31 - 1))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(list(s.stop) + template_stops)
        vocab = self.llm._model.vocab
        produced, finish, stopped = 0, "length", False
        for token in self.llm.generate(
            tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
        ):
            if cancel.is_set():
                self.note_cancelled(produced)
                return
            if not s.ignore_eos and self._llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            produced += 1
            text, stopped = matcher.feed(decoder.decode(token_bytes(self._llama_cpp, vocab, token)))
            if text:
                yield GenerationChunk(text=text)
            if stopped:
                finish = "stop"
                break
            if produced >= budget:
                break
        if not stopped:  # release text held back for a stop string that never came
            text, stopped = matcher.feed(decoder.decode(b"", final=True))
            rest = text if stopped else text + matcher.flush()
            if rest:
                yield GenerationChunk(text=rest)
        yield GenerationChunk(finish_reason=finish, usage=Usage(len(tokens), produced))
