"""What LoRA adapters cost under continuous batching: the same load, base model only against base
plus two adapters at once (llama.cpp sets adapters per context, so each adapter group runs in its
own steps and the groups take turns).

Builds, offline and once (cached under MODEL_CACHE_DIR), a random llama of SmolLM2-135M's shape
(30 layers, hidden 576, 9 heads / 3 KV heads) with SmolLM2's tokenizer and two random r=8 LoRA
adapters, converts them to GGUF (f16) with llama.cpp's converters, then runs the GGUF backend in
this process:

    .venv/bin/python -m scripts.bench_lora_groups [--streams 12] [--tokens 48]

Prints aggregate tokens/s of each mix and their ratio (one run, one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from scripts.convert_gguf_to_safetensors import cache_dir


def build(folder: Path) -> tuple[Path, dict[str, Path]]:
    """The random SmolLM2-shaped model and two adapters as GGUF files (built once)."""
    model_gguf = folder / "smollm2-shape.gguf"
    adapters = {name: folder / f"lora-{name}.gguf" for name in ("alpha", "beta")}
    if model_gguf.is_file() and all(p.is_file() for p in adapters.values()):
        return model_gguf, adapters
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from scripts.convert_to_gguf import convert_lora, convert_model
    from tests.tiny_models import smollm2_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer()))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    source = folder / "smollm2-shape"
    LlamaForCausalLM(config).eval().save_pretrained(str(source))
    tokenizer.save_pretrained(str(source))
    convert_model(source, model_gguf, "f16")
    for seed, (name, path) in enumerate(adapters.items()):
        torch.manual_seed(seed + 1)
        model = AutoModelForCausalLM.from_pretrained(str(source))
        lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")
        peft_dir = folder / f"lora-{name}"
        get_peft_model(model, lora).save_pretrained(str(peft_dir))
        convert_lora(peft_dir, source, path, "f16")
    return model_gguf, adapters


def load(model_gguf: Path, adapters: dict[str, Path], streams: int):
    from deployments.backends.gguf import GGUFBackend
    from deployments.config import parse_models

    entry = {"type": "gguf", "path": str(model_gguf), "context_length": 512, "threads": 2, "parallel": streams,
             "adapters": {n: str(p) for n, p in adapters.items()}, "max_adapters": 2}
    backend = GGUFBackend("lora-bench", parse_models({"models": {"m": entry}}).models["m"], model_gguf)
    backend.adapter_paths = dict(adapters)
    backend.load()
    return backend


async def _run(backend, mix: list, tokens: int) -> float:
    from core.types import GenerationRequest, SamplingParams

    async def one(i: int, adapter) -> int:
        request = GenerationRequest(request_id=f"{adapter}-{i}", prompt=f"Request {i}: the weather today",
                                    sampling=SamplingParams(max_tokens=tokens, temperature=0.7, ignore_eos=True),
                                    adapter=adapter)
        async for chunk in backend.stream(request):
            if chunk.usage:
                return chunk.usage.completion_tokens
        return 0

    started = time.perf_counter()
    produced = sum(await asyncio.gather(*(one(i, a) for i, a in enumerate(mix))))
    return produced / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = cache_dir() / "bench-lora"
    folder.mkdir(parents=True, exist_ok=True)
    model_gguf, adapters = build(folder)
    backend = load(model_gguf, adapters, args.streams)
    third = args.streams // 3
    mixes = {"base only": [None] * args.streams,
             "base + alpha + beta": [None] * third + ["alpha"] * third + ["beta"] * (args.streams - 2 * third)}
    try:
        asyncio.run(_run(backend, [None, "alpha", "beta"], 4))  # warm-up: adapters loaded
        results = {name: asyncio.run(_run(backend, mix, args.tokens)) for name, mix in mixes.items()}
    finally:
        backend.unload()
    base = results["base only"]
    print(f"| {args.streams} streams x {args.tokens} tokens | aggregate tok/s | ratio to base only |")
    print("|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"streams": args.streams, "tokens": args.tokens, "tok_s": results}))


if __name__ == "__main__":
    main()
