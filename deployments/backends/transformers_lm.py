"""SafeTensors causal LMs through transformers: AutoModelForCausalLM plus its tokenizer's chat template.

Served by `PaddedBatchEngine` (continuous batching, see deployments/engine/padded_engine.py): the
model's forward runs once per step over every running sequence, with a `DynamicCache` shared by
the batch. Models whose cache is not a plain per-layer key/value cache (sliding-window or
recurrent layers) cannot be left-padded and run one sequence at a time.

LoRA adapters (peft) load on first use into one PeftModel, at most `max_adapters` at a time
(least recently used evicted); a request for the base model runs with adapters disabled. One
batch holds one adapter group, so switching adapters never races and no adapter in use is evicted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, Optional

import numpy as np

from deployments.backends.base import register_backend
from deployments.backends.tensor_text import TensorTextBackend
from deployments.engine.padded_engine import TensorModel
from deployments.engine.sizing import hf_kv_bytes_per_token

logger = logging.getLogger("aicore.backend.transformers")

QUANTIZATIONS = ("8bit", "4bit")


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


class TorchModel(TensorModel):
    """The engine's view of a transformers model: the cache is a `DynamicCache` of B rows."""

    def __init__(self, backend: "TransformersBackend"):
        import inspect

        self.backend = backend
        self.torch = backend._torch
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, then goes in 5.40)
        forward = inspect.signature(backend.model.forward).parameters
        self.options = {"use_cache": True}
        if "logits_to_keep" in forward:  # only the last position's logits are used
            self.options["logits_to_keep"] = 1
        self.cache_arg = "cache" if "cache" in forward else "past_key_values"

    def _forward(self, ids, mask, positions, cache):
        backend, torch = self.backend, self.torch
        with torch.inference_mode():
            out = (backend._peft or backend.model)(
                input_ids=torch.as_tensor(ids, device=backend.device),
                attention_mask=torch.as_tensor(mask, device=backend.device),
                position_ids=torch.as_tensor(positions, device=backend.device),
                **self.options, **{self.cache_arg: cache})
        return out.logits[:, -1].float().cpu().numpy(), cache  # the cache grew in place

    def prefill(self, ids: list[int]) -> tuple[np.ndarray, Any]:
        from transformers import DynamicCache

        n = len(ids)
        logits, cache = self._forward([ids], np.ones((1, n), dtype=np.int64), np.arange(n)[None],
                                      DynamicCache(config=self.backend.model.config))
        return logits[0], cache

    def decode(self, cache, tokens: np.ndarray, positions: np.ndarray, mask: np.ndarray):
        return self._forward(tokens[:, None], mask, positions[:, None], cache)

    def join(self, cache, width: int, row, row_width: int):
        if cache is None:
            return row
        pad = self.torch.nn.functional.pad
        wider = max(width, row_width)
        for into, extra in zip(cache.layers, row.layers):
            for name in ("keys", "values"):  # (rows, kv heads, columns, head dim): pad columns on the left
                ours, theirs = getattr(into, name), getattr(extra, name)
                setattr(into, name, self.torch.cat([pad(ours, (0, 0, wider - width, 0)),
                                                    pad(theirs, (0, 0, wider - row_width, 0))]))
        return cache

    def keep(self, cache, rows: list[int], drop: int):
        index = self.torch.as_tensor(rows, device=self.backend.device)
        for layer in cache.layers:
            layer.keys = layer.keys[index, :, drop:]
            layer.values = layer.values[index, :, drop:]
        return cache

    def adapter_scope(self, name: Optional[str], in_use: set):
        return self.backend._adapter_scope(name, in_use)


@register_backend("transformers")
class TransformersBackend(TensorTextBackend):
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
        self.start_engine(TorchModel(self), self._kv_bytes_per_token(), batchable=self._plain_cache())

    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def _adapter_scope(self, name: Optional[str], in_use: set):
        """Make `name` (None: the base model) the active weights for one forward pass (engine thread only);
        past `max_adapters`, the least recently used adapter that no running row uses is evicted."""
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
        self._adapters.move_to_end(name)
        for old in [a for a in self._adapters if a not in in_use and a != name]:
            if len(self._adapters) <= self.config.max_adapters:
                break
            del self._adapters[old]
            self._peft.delete_adapter(old)
            logger.info("adapter evicted", extra={"model": self.model_name, "adapter": old})
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

    def _kv_bytes_per_token(self) -> Optional[int]:
        config = self.model.config.get_text_config(decoder=True).to_dict()
        return hf_kv_bytes_per_token(config, self._torch.finfo(self.model.dtype).bits // 8)

    def _plain_cache(self) -> bool:
        """Whether every layer's cache is a plain growing key/value pair (what left padding needs)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)
