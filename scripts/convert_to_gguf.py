"""SafeTensors -> GGUF, for the `gguf` backend: a transformers model, or a peft LoRA adapter of it.

    .venv/bin/python -m scripts.convert_to_gguf SRC_DIR [--out FILE] [--outtype f16]
    .venv/bin/python -m scripts.convert_to_gguf --lora ADAPTER_DIR --base SRC_DIR [--out FILE]

Default output: MODEL_CACHE_DIR/<folder name>-<outtype>.gguf (an adapter: <adapter>-lora-<outtype>.gguf).
An existing output is reused, not rebuilt.

The conversion runs llama.cpp's own `convert_hf_to_gguf.py` / `convert_lora_to_gguf.py` with the
`gguf-py` beside them (PyPI's `gguf` is older and fails on current transformers). They ship in the
llama-cpp-python sdist under `vendor/llama.cpp/`: the sdist of the installed llama_cpp version is
fetched once with `pip download` (or taken from `--sdist FILE` / AICORE_LLAMA_CPP_SDIST, for a
machine without a registry), and only those files are kept in
MODEL_CACHE_DIR/cache/llama.cpp-<version>/. They need torch, transformers, sentencepiece and
protobuf (the `hf` extra). The converters know a tokenizer by its hash: an unknown one is refused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Optional

from scripts.convert_gguf_to_safetensors import cache_dir

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")
# What the converters need from the sdist's vendor/llama.cpp/ (files, or folders taken whole).
NEEDED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/gguf/")


def llama_cpp_version() -> str:
    return version("llama-cpp-python")


def _download_sdist(ver: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={ver}", "-d", str(into)],
        check=True,
    )
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no llama-cpp-python sdist in {into}")
    return found[0]


def _extract(sdist: Path, out: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/vendor/llama.cpp/")
            if "/" in top or not rest or not (member.isfile() or member.isdir()):
                continue
            if any(rest == n or (n.endswith("/") and rest.startswith(n)) for n in NEEDED):
                member.name = rest
                members.append(member)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise RuntimeError(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(out, members=members, **extra)


def converter_dir(sdist: Optional[Path] = None) -> Path:
    """llama.cpp's converters for the installed llama_cpp, in MODEL_CACHE_DIR/cache (fetched once)."""
    ver = llama_cpp_version()
    out = cache_dir() / "cache" / f"llama.cpp-{ver}"
    if (out / "convert_lora_to_gguf.py").is_file():
        return out
    sdist = sdist or (Path(os.environ["AICORE_LLAMA_CPP_SDIST"]) if os.environ.get("AICORE_LLAMA_CPP_SDIST") else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / "llama.cpp"
        _extract(sdist or _download_sdist(ver, Path(tmp)), partial)
        if not out.exists():  # another process may have finished first
            partial.rename(out)
    return out


def _run(script: str, args: list[str], out: Path, sdist: Optional[Path]) -> Path:
    """Run one converter into `out.partial`, then rename: a crash never leaves a finished-looking file."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter must import the gguf-py beside it
    done = subprocess.run([sys.executable, str(converter_dir(sdist) / script), *args, "--outfile", str(partial)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    partial.rename(out)
    return out


def convert_model(source: Path, out: Path, outtype: str = "f16", sdist: Optional[Path] = None) -> Path:
    """A transformers folder (config.json, *.safetensors, tokenizer) -> one GGUF file."""
    return _run("convert_hf_to_gguf.py", [str(source), "--outtype", outtype], out, sdist)


def convert_lora(adapter: Path, base: Path, out: Path, outtype: str = "f16", sdist: Optional[Path] = None) -> Path:
    """A peft LoRA folder (adapter_config.json, adapter_model.safetensors) of `base` -> a GGUF LoRA."""
    return _run("convert_lora_to_gguf.py", [str(adapter), "--base", str(base), "--outtype", outtype], out, sdist)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", type=Path, help="transformers model folder")
    parser.add_argument("--lora", type=Path, help="peft LoRA adapter folder (needs --base)")
    parser.add_argument("--base", type=Path, help="the adapter's base model folder (its config.json)")
    parser.add_argument("--out", type=Path, help="output .gguf file (default: in MODEL_CACHE_DIR)")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type (default f16)")
    parser.add_argument("--sdist", type=Path, help="a llama-cpp-python sdist to take the converters from")
    args = parser.parse_args()
    if bool(args.lora) == bool(args.source) or (args.lora and not args.base):
        parser.error("give either SOURCE, or --lora ADAPTER with --base BASE")
    started = time.monotonic()
    if args.lora:
        out = args.out or cache_dir() / f"{args.lora.resolve().name}-lora-{args.outtype}.gguf"
        convert_lora(args.lora, args.base, out, args.outtype, args.sdist)
    else:
        out = args.out or cache_dir() / f"{args.source.resolve().name}-{args.outtype}.gguf"
        convert_model(args.source, out, args.outtype, args.sdist)
    print(f"{out} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
