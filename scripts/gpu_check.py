"""One-shot GPU check of the transformers backend: device cuda, fp16 and bitsandbytes 4-bit, plus a LoRA.

    MODEL_CACHE_DIR=models python -m scripts.gpu_check [--model DIR]

Without --model it generates the tiny llama of the tests (needs the SmolLM2 tokenizer saved by
`python -m scripts.convert_gguf_to_safetensors --tokenizer-only`). Prints, per configuration,
where the weights live, whether 4-bit layers are in place, GPU memory and decode tok/s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from core.types import GenerationRequest, SamplingParams
from deployments.backends import get_backend
from deployments.config import ModelConfig


async def _run(backend, adapter=None, tokens=64):
    request = GenerationRequest("gpu-check", SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True,
                                                            repeat_penalty=1.0), prompt="The capital of France is",
                                adapter=adapter)
    started, first, parts, final = time.perf_counter(), None, [], None
    async for chunk in backend.stream(request):
        first = first or time.perf_counter()
        parts.append(chunk.text)
        final = chunk
    elapsed = time.perf_counter() - (first or started)
    return "".join(parts), final.usage.completion_tokens, (final.usage.completion_tokens - 1) / max(elapsed, 1e-9)


def check(model_dir: Path, adapter_dir: Path | None) -> None:
    import torch

    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
    for quantization in (None, "4bit"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        adapters = {"lora": str(adapter_dir)} if adapter_dir else {}
        config = ModelConfig(type="transformers", path=str(model_dir), device="cuda", quantization=quantization,
                             adapters=adapters)
        backend = get_backend("transformers")("gpu-check", config, model_dir)
        backend.adapter_paths = {k: Path(v) for k, v in adapters.items()}
        backend.load()
        layers = {type(m).__name__ for m in backend.model.modules() if "Linear" in type(m).__name__}
        text, produced, rate = asyncio.run(_run(backend))
        print(f"quantization={quantization} device={backend.model.device} "
              f"dtype={next(backend.model.parameters()).dtype} linear_layers={sorted(layers)} "
              f"tokens={produced} decode={rate:.1f} tok/s peak_gpu_mem={torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
        print("  text:", repr(text[:120]))
        if adapter_dir:
            lora_text, _, _ = asyncio.run(_run(backend, "lora"))
            base_again, _, _ = asyncio.run(_run(backend))
            print(f"  lora differs from base: {lora_text != text}; base unchanged after lora: {base_again == text}")
        backend.unload()
        del backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a transformers folder (default: a tiny llama)")
    args = parser.parse_args()
    if args.model:
        check(args.model, None)
        return
    from tests.tiny_models import tiny_llama, tiny_lora

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    base = tiny_llama(work / "tiny")
    check(base, tiny_lora(base, work / "lora", seed=1))


if __name__ == "__main__":
    main()
