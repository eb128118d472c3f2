"""GGUF backend: llama-cpp-python.

Decoding is our own loop over `Llama.generate` so that token counts are exact, a
cancelled request stops within one token, and stop strings never leak into a stream.
"""

from __future__ import annotations

import codecs
import inspect
import random
import threading
from typing import Iterator

from deployments.backends.base import ThreadedBackend, register_backend
from deployments.backends.text import StopMatcher, token_budget
from deployments.errors import InvalidRequest
from deployments.types import GenerationChunk, GenerationRequest, Usage


def _named_formatter(name: str):
    """llama.cpp's built-in chat formatter for a name such as `gemma` or `llama-2`."""
    from llama_cpp import llama_chat_format

    wanted = name.replace("-", "").replace("_", "").lower()
    for attr, fn in inspect.getmembers(llama_chat_format, inspect.isfunction):
        if attr.startswith("format_") and attr[7:].replace("_", "").lower() == wanted:
            return fn
    raise ValueError(f"unknown chat_format {name!r}")


@register_backend("gguf")
class GGUFBackend(ThreadedBackend):
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
            text, stopped = matcher.feed(decoder.decode(self.llm.detokenize([token])))
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
