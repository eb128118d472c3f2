"""Tiny models generated in the test session (milliseconds, no download): a llama-architecture
causal LM with the SmolLM2 tokenizer (saved once from the packaged GGUF into MODEL_CACHE_DIR)."""

from __future__ import annotations

from pathlib import Path

from scripts.convert_gguf_to_safetensors import cache_dir, convert_tokenizer, packaged_smollm2


def smollm2_tokenizer() -> Path:
    """The packaged SmolLM2's tokenizer as a transformers folder (built once, ~30 s, then reused)."""
    out = cache_dir() / "smollm2-135m-instruct-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    return convert_tokenizer(packaged_smollm2(), out)


def tiny_llama(out: Path, seed: int = 0) -> Path:
    """A random 2-layer llama (hidden 64) saved as SafeTensors with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer()))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def tiny_lora(base: Path, out: Path, seed: int) -> Path:
    """A random LoRA adapter (r=4 on the attention projections) that visibly changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(str(out))
    return out
