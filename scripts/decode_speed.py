"""Decode speed of this environment's llama.cpp build, in one process (no server): compares builds,
e.g. the image's portable llama.cpp (GGML_NATIVE=OFF) against a native one (scripts/check_image.sh).

    python -m scripts.decode_speed [--tokens 200] [--runs 5]

SmolLM2 from the shipped models.json, its threads and context; greedy, end-of-sequence ignored;
decode tokens/s = (N - 1) / (time of last token - time of first token). Needs only llama-cpp-python
(no httpx), so it runs inside the image too. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from deployments.config import load_models_file
from deployments.weights import resolve_weights

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
PROMPT = "Write a long story about a lighthouse keeper and the sea."


def decode_speed(llm, tokens: int) -> float:
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    stamps = []
    for _ in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, repeat_penalty=1.0):
        stamps.append(time.perf_counter())
        if len(stamps) == tokens:
            break
    llm.reset()
    return (tokens - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    config = load_models_file(ROOT / "models.json").models[MODEL]
    path = resolve_weights(config.path, Path(tempfile.gettempdir()))
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=config.context_length, n_threads=config.threads,
                          n_threads_batch=config.threads, verbose=False)
    decode_speed(llm, 8)  # warm-up
    runs = [decode_speed(llm, args.tokens) for _ in range(args.runs)]
    features = llama_cpp.llama_print_system_info().decode(errors="replace")
    print(json.dumps({"label": args.label, "model": MODEL, "tokens": args.tokens, "threads": config.threads,
                      "median_tok_s": round(statistics.median(runs), 1), "runs": [round(r, 1) for r in runs],
                      "system_info": " ".join(features.split())}))


if __name__ == "__main__":
    main()
