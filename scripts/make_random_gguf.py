"""A random-weight llama of a chosen size as GGUF, made offline (for sizing and speed checks only).

    .venv/bin/python -m scripts.make_random_gguf --params 1b [--quant q4_k_m] [--out FILE]

The weights are noise: the text is garbage, but a forward pass costs what a real model of that
shape costs (llama.cpp's speed depends on the shapes and the tensor types, not on the values).
Shapes follow public models of each size; the vocabulary is SmolLM2's (49152 tokens) so that
llama.cpp's converter recognises the tokenizer (see scripts/convert_to_gguf.py):

| --params | shape like | hidden | layers | heads / KV heads | FFN | tied | parameters |
|---|---|---|---|---|---|---|---|
| 1b | Llama-3.2-1B | 2048 | 16 | 32 / 8 | 8192 | yes | 1.07 B |
| 3b | Llama-3.2-3B | 3072 | 28 | 24 / 8 | 8192 | yes | 3.0 B |
| 7b | Llama-3.1-8B without its big vocabulary | 4096 | 32 | 32 / 8 | 14336 | no | 7.4 B |

Steps, each reused when its output exists (all under MODEL_CACHE_DIR, git-ignored):
1. `random-llama-<size>/`: config.json, the SmolLM2 tokenizer and bf16 SafeTensors shards written
   tensor by tensor (peak memory about one shard, 1 GiB, never the whole model);
2. `random-llama-<size>-f16.gguf`: llama.cpp's `convert_hf_to_gguf.py` (lazy, tensor by tensor);
3. `random-llama-<size>-<quant>.gguf`: llama.cpp's own quantizer (`llama_model_quantize`, in the
   installed llama_cpp: no extra build), Q4_K_M by default (the packaged models are 4-bit too),
   or Q8_0 / Q4_0. The f16 file is deleted afterwards unless `--keep-f16`.

Heavy on the CPU for minutes (3b: ~5 min on 2 cores): on a shared machine run it under the
CPU lock (`flock /tmp/aicore-cpu.lock ...`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.convert_gguf_to_safetensors import cache_dir, convert_tokenizer, packaged_smollm2
from scripts.convert_to_gguf import convert_model

SHARD_BYTES = 1 << 30
INIT_STD = 0.02


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    tied: bool

    def params(self, vocab: int) -> int:
        head = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head
        per_layer = attn + 3 * self.hidden * self.ffn + 2 * self.hidden
        return vocab * self.hidden * (1 if self.tied else 2) + self.layers * per_layer + self.hidden


SHAPES = {
    "1b": Shape(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, tied=True),
    "3b": Shape(hidden=3072, layers=28, heads=24, kv_heads=8, ffn=8192, tied=True),
    "7b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, tied=False),
}
QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as a transformers folder (saved once from the packaged GGUF)."""
    out = cache_dir() / "smollm2-135m-instruct-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    return convert_tokenizer(packaged_smollm2(), out)


def tensors(shape: Shape, vocab: int):
    """(name, shape, kind) of every tensor of a LlamaForCausalLM, in file order."""
    h, head = shape.hidden, shape.hidden // shape.heads
    yield "model.embed_tokens.weight", (vocab, h), "normal"
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,), "ones"
        yield p + "self_attn.q_proj.weight", (h, h), "normal"
        yield p + "self_attn.k_proj.weight", (shape.kv_heads * head, h), "normal"
        yield p + "self_attn.v_proj.weight", (shape.kv_heads * head, h), "normal"
        yield p + "self_attn.o_proj.weight", (h, h), "normal"
        yield p + "post_attention_layernorm.weight", (h,), "ones"
        yield p + "mlp.gate_proj.weight", (shape.ffn, h), "normal"
        yield p + "mlp.up_proj.weight", (shape.ffn, h), "normal"
        yield p + "mlp.down_proj.weight", (h, shape.ffn), "normal"
    yield "model.norm.weight", (h,), "ones"
    if not shape.tied:
        yield "lm_head.weight", (vocab, h), "normal"


def llama_config(shape: Shape, vocab: int, bos: int | None = None, eos: int | None = None):
    from transformers import LlamaConfig

    return LlamaConfig(
        architectures=["LlamaForCausalLM"], vocab_size=vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=8192, rope_theta=10000.0, tie_word_embeddings=shape.tied,
        bos_token_id=bos, eos_token_id=eos, torch_dtype="bfloat16",
    )


def write_safetensors(size: str, out: Path, seed: int = 0) -> Path:
    """config.json + tokenizer + random bf16 shards; a finished folder is reused."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    if (out / "model.safetensors.index.json").is_file():
        return out
    shape = SHAPES[size]
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    vocab = len(tokenizer)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    llama_config(shape, vocab, tokenizer.bos_token_id, tokenizer.eos_token_id).save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))

    generator = torch.Generator().manual_seed(seed)
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, names, weight_map, total = 0, [], {}, 0

    def flush() -> None:
        nonlocal shard, shard_bytes
        name = f"model-{len(names) + 1:05d}.safetensors"
        save_file(shard, str(partial / name), metadata={"format": "pt"})
        names.append(name)
        weight_map.update({k: name for k in shard})
        shard, shard_bytes = {}, 0

    for name, dims, kind in tensors(shape, vocab):
        if kind == "ones":
            tensor = torch.ones(dims, dtype=torch.bfloat16)
        else:
            tensor = torch.empty(dims, dtype=torch.bfloat16).normal_(0.0, INIT_STD, generator=generator)
        shard[name] = tensor
        shard_bytes += tensor.numel() * 2
        total += tensor.numel() * 2
        if shard_bytes >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def quantize(source: Path, out: Path, quant: str, threads: int) -> Path:
    """llama.cpp's quantizer, in process through llama_cpp's low-level API."""
    import llama_cpp

    if out.is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({source} -> {quant}) returned {code}")
    partial.rename(out)
    return out


def make(size: str, quant: str, out: Path | None = None, threads: int = 2, keep_f16: bool = False) -> Path:
    base = cache_dir() / f"random-llama-{size}"
    out = out or base.with_name(f"{base.name}-{quant}.gguf")
    if out.is_file():
        return out
    f16 = base.with_name(f"{base.name}-f16.gguf")
    if not f16.is_file():
        write_safetensors(size, base)
        convert_model(base, f16, "f16")
        shutil.rmtree(base)  # the GGUF holds everything now
    quantize(f16, out, quant, threads)
    if not keep_f16:
        f16.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", choices=sorted(SHAPES), default="1b", help="model size (default 1b)")
    parser.add_argument("--quant", choices=sorted(QUANTS), default="q4_k_m", help="tensor type (default q4_k_m)")
    parser.add_argument("--out", type=Path, help="output .gguf (default: MODEL_CACHE_DIR/random-llama-SIZE-QUANT.gguf)")
    parser.add_argument("--threads", type=int, default=2, help="quantizer threads (default 2)")
    parser.add_argument("--keep-f16", action="store_true", help="keep the intermediate f16 GGUF")
    args = parser.parse_args()
    started = time.monotonic()
    out = make(args.params, args.quant, args.out, args.threads, args.keep_f16)
    shape = SHAPES[args.params]
    print(f"{out} ({out.stat().st_size / 2**30:.2f} GiB, ~{shape.params(49152) / 1e9:.2f} B parameters, "
          f"{time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
