"""How many sequence slots a GGUF replica gets: sized from memory, not only from cores.

Each slot holds `context_length` tokens of KV cache: per token, every layer keeps a key and a
value vector per KV head (f16, 2 bytes a value). A 135M model needs ~23 KB a token (~47 MB a
2k-token slot); a 7B llama ~128 KB a token (~0.5 GB a 4k slot): 16 such slots would need 8 GB,
so `parallel` defaults to what `kv_cache_budget` holds, at most `MAX_AUTO_PARALLEL`.
"""

from __future__ import annotations

from typing import Mapping, Optional

MAX_AUTO_PARALLEL = 16  # past 16 sequences the batched ceiling on 2-8 CPU cores barely rises
KV_VALUE_BYTES = 2  # f16


def _int(meta: Mapping[str, str], key: str) -> Optional[int]:
    try:
        return int(meta[key])
    except (KeyError, ValueError, TypeError):
        return None


def kv_bytes_per_token(meta: Mapping[str, str]) -> Optional[int]:
    """KV-cache bytes one token takes in one sequence, from GGUF metadata (None if unknown)."""
    arch = meta.get("general.architecture")
    if not arch:
        return None
    layers, heads, embd = (_int(meta, f"{arch}.{k}") for k in ("block_count", "attention.head_count",
                                                                 "embedding_length"))
    if not (layers and heads and embd):
        return None
    kv_heads = _int(meta, f"{arch}.attention.head_count_kv") or heads  # per-layer arrays: take the worst case
    key = _int(meta, f"{arch}.attention.key_length") or embd // heads
    value = _int(meta, f"{arch}.attention.value_length") or embd // heads
    return layers * kv_heads * (key + value) * KV_VALUE_BYTES


def hf_kv_bytes_per_token(config: Mapping, value_bytes: int) -> Optional[int]:
    """KV-cache bytes a token takes in one sequence of a transformers model (its config.json's fields)."""
    config = config.get("text_config") or config
    try:
        layers, heads, hidden = config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"]
    except (KeyError, TypeError):
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    return layers * kv_heads * head_dim * 2 * value_bytes


def auto_parallel(per_token: Optional[int], context_length: int, budget_bytes: int) -> int:
    """Slots the KV budget holds at `context_length` tokens each: 1..MAX_AUTO_PARALLEL."""
    if not per_token:
        return 4
    return max(1, min(MAX_AUTO_PARALLEL, budget_bytes // (per_token * context_length)))


def read_gguf_metadata(path: str) -> dict[str, str]:
    """A GGUF file's metadata without loading its weights (llama.cpp's vocab-only load)."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=path, params=params, verbose=False)
    try:
        return model.metadata()
    finally:
        model.close()
