"""Memory sizes: a model's footprint, the node's budget, byte strings like `2GiB`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from deployments.config import ModelConfig
from deployments.weights import ASSEMBLE, WeightsNotFound, resolve_weights

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "t": 10**12, "tb": 10**12}

RUNTIME_OVERHEAD_BYTES = 160 * 2**20  # a Serve replica process (Python, Ray worker) before any weights
KV_BYTES_PER_CONTEXT_TOKEN = 48 * 2**10  # a generous KV-cache figure for the small models served on CPU


def parse_size(text: str | int | None) -> Optional[int]:
    """`2GiB`, `512MB`, `1.5G` or a plain byte count -> bytes (None stays None)."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 2GiB, 512MB, 1073741824)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def weights_bytes(path: str, cache_dir: Path, config_dir: Optional[Path]) -> Optional[int]:
    """Size on disk of the weights, without assembling packaged chunks (None if unknown)."""
    if path.startswith(ASSEMBLE):
        found = cache_dir / path[len(ASSEMBLE):].strip("/")  # where _assemble puts it, once assembled
        if not found.is_dir():
            return None
    else:
        try:
            found = resolve_weights(path, cache_dir, config_dir)
        except WeightsNotFound:
            return None
    files = [found] if found.is_file() else [p for p in found.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def footprint(config: ModelConfig, cache_dir: Path, config_dir: Optional[Path]) -> Optional[int]:
    """Bytes one replica needs: `memory`, else `max_memory`, else weights + context (+ a GGUF model's
    saved conversations) + runtime."""
    if config.memory:
        return config.memory
    if config.max_memory:
        return parse_size(config.max_memory) + RUNTIME_OVERHEAD_BYTES
    size = weights_bytes(config.path, cache_dir, config_dir)
    if size is None:
        return None
    fp32_factor = 2 if config.type == "transformers" and config.dtype in ("auto", "float32") else 1
    saved = parse_size(config.saved_prompt_budget) if config.type == "gguf" and config.task == "generate" else 0
    return size * fp32_factor + kv_cache_bytes(config, cache_dir, config_dir) + saved + RUNTIME_OVERHEAD_BYTES


def kv_cache_bytes(config: ModelConfig, cache_dir: Path, config_dir: Optional[Path]) -> int:
    """KV cache of every slot: a text model's replica holds `parallel` contexts (sized from the GGUF's
    metadata, or from the config.json beside transformers and ONNX weights)."""
    if config.task != "generate":
        return config.context_length * KV_BYTES_PER_CONTEXT_TOKEN
    from deployments.engine.sizing import auto_parallel, hf_kv_bytes_per_token, kv_bytes_per_token, read_gguf_metadata

    try:
        weights = resolve_weights(config.path, cache_dir, config_dir)
        if config.type == "gguf":
            per_token = kv_bytes_per_token(read_gguf_metadata(str(weights)))
        else:
            folder = weights if weights.is_dir() else weights.parent
            value_bytes = 2 if config.dtype in ("float16", "bfloat16") else 4
            per_token = hf_kv_bytes_per_token(json.loads((folder / "config.json").read_text()), value_bytes)
    except Exception:  # not assembled yet, unreadable, no config.json: the generous figure
        per_token = None
    per_token = per_token or KV_BYTES_PER_CONTEXT_TOKEN
    slots = config.parallel or auto_parallel(per_token, config.context_length, parse_size(config.kv_cache_budget))
    return slots * config.context_length * per_token


def node_memory() -> tuple[int, int]:
    """(total, available) bytes of this node."""
    import psutil

    vm = psutil.virtual_memory()
    return vm.total, vm.available
