"""SafeTensors causal LM -> ONNX decoder with past key/values, for the `onnx` backend.

    .venv/bin/python -m scripts.convert_to_onnx SRC_DIR [--out DIR]    # default out: MODEL_CACHE_DIR/<name>-onnx

The graph takes `input_ids`, `attention_mask` (past + new), `position_ids` and
`past_key_values.<layer>.key|value` (batch, kv_heads, past, head_dim), and returns `logits` and
`present.<layer>.key|value`: each new token costs one step over one token. The tokenizer
(with its chat template) is copied beside `model.onnx`. An existing output is reused.
Exported with the TorchScript exporter (dynamo=False, opset 17) and eager attention, which
trace llama-architecture models exactly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scripts.convert_gguf_to_safetensors import cache_dir


def _wrapper(model, layers: int):
    import torch
    from transformers import DynamicCache

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            presents = []
            for layer in out.past_key_values.layers[:layers]:
                presents += [layer.keys, layer.values]
            return (out.logits, *presents)

    return Decoder()


def export(source: Path, out: Path) -> Path:
    """Export `source` (a transformers folder) to `out/model.onnx`; skipped when present."""
    if (out / "model.onnx").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, attn_implementation="eager").eval()
    config = model.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    past_len, new_len = 3, 2  # any sizes > 0 for tracing; every axis below is dynamic
    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present_names = [name.replace("past_key_values", "present") for name in past_names]
    axes = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    axes.update({name: {0: "batch", 2: "past"} for name in past_names})
    axes.update({name: {0: "batch", 2: "total"} for name in present_names})
    args = (
        torch.zeros((1, new_len), dtype=torch.long),
        torch.ones((1, past_len + new_len), dtype=torch.long),
        torch.arange(past_len, past_len + new_len)[None],
        *[torch.zeros((1, kv_heads, past_len, head_dim)) for _ in past_names],
    )
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            _wrapper(model, layers), args, str(partial / "model.onnx"), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names], dynamic_axes=axes,
        )
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(partial))
    config.save_pretrained(str(partial))
    partial.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a transformers folder (SafeTensors)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: in MODEL_CACHE_DIR)")
    args = parser.parse_args()
    out = args.out or cache_dir() / f"{args.source.resolve().name}-onnx"
    started = time.monotonic()
    export(args.source, out)
    print(f"{out} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
