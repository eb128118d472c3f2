"""SafeTensors causal LMs through transformers: AutoModelForCausalLM plus its tokenizer's chat template.

`model.generate` runs on its own thread and hands every new token to a streamer queue; the
engine thread (ThreadedBackend) reads that queue, so text streams token by token. A
StoppingCriteria that watches the request's cancel event (client gone) and a stop flag
(a stop string matched) ends `generate` within one token.

LoRA adapters (peft) load on first use into one PeftModel, at most `max_adapters` at a time
(least recently used evicted); a request for the base model runs with adapters disabled.
Requests run one at a time on the engine thread, so switching adapters never races.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, Iterator, Optional

from deployments.backends.base import ThreadedBackend, register_backend
from deployments.backends.text import TokenText, token_budget
from deployments.errors import InvalidRequest
from deployments.types import GenerationChunk, GenerationRequest, SamplingParams, Usage

logger = logging.getLogger("aicore.backend.transformers")

QUANTIZATIONS = ("8bit", "4bit")
_END = object()


class TokenQueue:
    """A transformers streamer: the first `put` is the prompt (skipped); later ones are new tokens."""

    def __init__(self):
        self.items: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self.finished = False  # the end marker has been read

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.items.put(token)

    def end(self) -> None:
        self.items.put(_END)

    def fail(self, error: BaseException) -> None:
        self.items.put(error)

    def drain(self) -> None:
        """Discard tokens until `generate` has returned."""
        while not self.finished:
            self.finished = self.items.get() is _END

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self.items.get()
            if item is _END:
                self.finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _stopping_criteria(cancel: threading.Event, stop: threading.Event):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class UntilEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            done = cancel.is_set() or stop.is_set()
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([UntilEvent()])


def _penalties(presence: float, frequency: float, prompt_len: int):
    """OpenAI's presence/frequency penalties over the completion tokens so far."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Penalties(LogitsProcessor):
        def __call__(self, input_ids, scores):
            import torch

            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return scores - presence * (counts > 0).to(scores.dtype) - frequency * counts

    return LogitsProcessorList([Penalties()]) if presence or frequency else LogitsProcessorList()


def quantization_config(name: str | None, cuda: bool):
    """bitsandbytes settings for `quantization` ("8bit" or "4bit"), or None."""
    if name is None:
        return None
    if name not in QUANTIZATIONS:
        raise ValueError(f"quantization {name!r} is not supported by transformers models (use {QUANTIZATIONS})")
    import torch
    from transformers import BitsAndBytesConfig

    if name == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
    )


@register_backend("transformers")
class TransformersBackend(ThreadedBackend):
    supports_adapters = True

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        torch.set_num_threads(self.config.threads)
        cuda = self.config.device == "cuda" or (self.config.device == "auto" and torch.cuda.is_available())
        if self.config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"model {self.model_name!r}: device is cuda but no CUDA device is visible")
        kwargs: dict[str, Any] = {"dtype": self._dtype(cuda)}
        quant = quantization_config(self.config.quantization, cuda)
        if quant is not None:
            kwargs["quantization_config"] = quant
        if self.config.max_memory:  # accelerate places what fits, the rest goes to the next device
            kwargs["device_map"] = "auto"
            kwargs["max_memory"] = {0: self.config.max_memory} if cuda else {"cpu": self.config.max_memory}
        else:
            kwargs["device_map"] = "cuda" if cuda else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(str(self.weights), **kwargs).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path or self.weights))
        self.device = self.model.device
        self.context_length = self.config.context_length
        self.eos_ids = self._eos_ids()
        self._adapters: OrderedDict[str, None] = OrderedDict()  # loaded, least recently used first
        self._peft = None  # the PeftModel wrapping self.model once an adapter is loaded

    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def _adapter_scope(self, name: Optional[str]):
        """Make `name` (None: the base model) the active weights for one generation (engine thread only)."""
        if name is None:
            return self._peft.disable_adapter() if self._peft is not None else nullcontext()
        if name not in self._adapters:
            from peft import PeftModel

            path = str(self.adapter_paths[name])
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            else:
                self._peft.load_adapter(path, adapter_name=name)
            self._adapters[name] = None
            while len(self._adapters) > self.config.max_adapters:
                evicted, _ = self._adapters.popitem(last=False)
                self._peft.delete_adapter(evicted)
                logger.info("adapter evicted", extra={"model": self.model_name, "adapter": evicted})
        self._adapters.move_to_end(name)
        self._peft.set_adapter(name)
        return nullcontext()

    def _dtype(self, cuda: bool):
        if self.config.dtype != "auto":
            return getattr(self._torch, self.config.dtype)
        return "auto" if cuda else self._torch.float32

    def _eos_ids(self) -> set[int]:
        found = self.model.generation_config.eos_token_id
        ids = set(found if isinstance(found, list) else [found] if found is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is None:
            return self.tokenizer(request.prompt or "").input_ids
        if not self.tokenizer.chat_template:
            raise InvalidRequest(
                f"model {self.model_name!r} has no chat template: use completions", param="messages"
            )
        text = self.tokenizer.apply_chat_template([dict(m) for m in request.messages], tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _generation_config(self, s: SamplingParams, budget: int):
        from transformers import GenerationConfig

        options: dict[str, Any] = {
            "max_new_tokens": budget,
            "eos_token_id": sorted(self.eos_ids) or None,
            "pad_token_id": self.tokenizer.pad_token_id or next(iter(self.eos_ids), 0),
        }
        if s.ignore_eos:
            options["min_new_tokens"] = budget
        if s.repeat_penalty != 1.0:
            options["repetition_penalty"] = s.repeat_penalty
        if s.temperature > 0:
            options.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        else:
            options["do_sample"] = False
        return GenerationConfig(**options)

    def _start(self, ids: list[int], s: SamplingParams, budget: int, cancel, stop) -> TokenQueue:
        torch = self._torch
        torch.manual_seed(s.seed if s.seed is not None else random.randint(0, 2**31 - 1))
        streamer = TokenQueue()
        input_ids = torch.tensor([ids], device=self.device)

        def run() -> None:
            try:
                with torch.inference_mode():
                    (self._peft or self.model).generate(
                        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        generation_config=self._generation_config(s, budget), streamer=streamer,
                        stopping_criteria=_stopping_criteria(cancel, stop),
                        logits_processor=_penalties(s.presence_penalty, s.frequency_penalty, len(ids)),
                    )
            except BaseException as error:  # handed to the reading thread
                streamer.fail(error)
            finally:
                streamer.end()

        threading.Thread(target=run, name=f"generate-{self.model_name}", daemon=True).start()
        return streamer

    def generate_blocking(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationChunk]:
        with self._adapter_scope(request.adapter):
            yield from self._generate(request, cancel)

    def _generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationChunk]:
        ids = self.prompt_ids(request)
        s = request.sampling
        budget = token_budget(self.model_name, self.context_length, self.config.default_max_tokens, len(ids),
                              s.max_tokens, "prompt" if request.messages is None else "messages")
        stop = threading.Event()
        tokens = self._start(ids, s, budget, cancel, stop)
        out = TokenText(lambda t: self.tokenizer.decode(t, skip_special_tokens=True), s.stop)
        produced = out.produced
        finish = "length"
        try:
            for token in tokens:
                if cancel.is_set():
                    break
                if token in self.eos_ids and not s.ignore_eos:
                    finish = "stop"
                    break
                piece = out.push(token)
                if piece:
                    yield GenerationChunk(text=piece)
                if out.stopped:
                    finish = "stop"
                    break
                if len(produced) >= budget:
                    break
        finally:  # also when the consumer closes this generator (client gone)
            stop.set()
            tokens.drain()  # generate ends at its next step; wait, so requests never overlap on the model
            if cancel.is_set():
                self.note_cancelled(len(produced))
        if cancel.is_set():
            return
        rest = out.finish()
        if rest:
            yield GenerationChunk(text=rest)
        yield GenerationChunk(finish_reason=finish, usage=Usage(len(ids), len(produced)))
