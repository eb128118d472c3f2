"""GGUF LoRA adapters of one replica's llama.cpp context, loaded on first use, least recently used out."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from core.errors import BackendFailure

logger = logging.getLogger("aicore.engine")


class Adapters:
    """GGUF LoRA adapters in memory, least recently used first; never frees one a sequence uses."""

    def __init__(self, lib, model, paths: dict[str, Any], keep: int, model_name: str):
        self.lib, self.model, self.paths, self.keep, self.model_name = lib, model, paths, keep, model_name
        self.loaded: OrderedDict[str, Any] = OrderedDict()

    def get(self, name: str, in_use: set) -> Any:
        if name not in self.loaded:
            path = str(self.paths[name])
            adapter = self.lib.llama_adapter_lora_init(self.model, path.encode("utf-8"))
            if not adapter:  # a file made for another base model, or not a GGUF LoRA
                logger.error("llama.cpp could not load LoRA %s", path, extra={"model": self.model_name})
                raise BackendFailure(f"adapter {name!r} of model {self.model_name!r} could not be loaded; "
                                     "the server log has the reason")
            self.loaded[name] = adapter
        self.loaded.move_to_end(name)
        for old in [n for n in self.loaded if n not in in_use and n != name]:
            if len(self.loaded) <= self.keep:
                break
            self.lib.llama_adapter_lora_free(self.loaded.pop(old))
            logger.info("adapter evicted", extra={"model": self.model_name, "adapter": old})
        return self.loaded[name]

    def free(self) -> None:
        for adapter in self.loaded.values():
            self.lib.llama_adapter_lora_free(adapter)
        self.loaded.clear()
