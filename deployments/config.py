"""The model registry: `models.json`, validated with pydantic.

A bad file fails at start with a message naming the model and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class AutoscalingConfig(BaseModel):
    """Replica bounds for one model's Ray Serve deployment."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: Optional[int] = Field(
        None, ge=0,
        description="Replicas kept alive; 0 loads the model on first use and unloads it when idle. "
        "Default: 1 for the default model and models with preload, else 0.",
    )
    max_replicas: int = Field(1, ge=1, description="Upper bound on replicas for this model.")
    target_ongoing_requests: Optional[float] = Field(
        None, gt=0, description="Ongoing requests (running plus queued) per replica that the autoscaler aims "
        "for. Default: the model's `parallel` slots for gguf models (a queue starts another replica), else 8."
    )
    downscale_delay_s: float = Field(
        300, ge=0, description="Seconds of low load before one of several replicas is removed "
        "(the last replica goes after `idle_timeout_s`)."
    )

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info) -> int:
        low = info.data.get("min_replicas") or 0
        if value < low:
            raise ValueError(f"max_replicas ({value}) is below min_replicas ({low})")
        return value


class ModelConfig(BaseModel):
    """One entry of `models.json`: what to load, how, and what Ray gives it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    type: Literal["gguf", "transformers", "onnx"] = Field(description="Backend that serves the model.")
    task: Literal["generate", "embed"] = Field(
        "generate", description="`generate` (chat and completions) or `embed` (embeddings)."
    )
    path: str = Field(
        description=(
            "Weights: `package://<pkg>/<file>` (a file inside an installed package), "
            "`package-assemble://<pkg>` (a package whose `assemble(path)` builds the file into "
            "MODEL_CACHE_DIR once), an absolute path, or a path relative to MODEL_CACHE_DIR "
            "or the config file's folder."
        )
    )
    tokenizer: Optional[str] = Field(
        None, description="Tokenizer folder or tokenizer.json (same forms as `path`) when the weights carry none."
    )
    format: Optional[str] = Field(None, description="Weight format label shown in listings, e.g. `Q4_1`.")
    context_length: int = Field(2048, ge=16, description="Context window in tokens (prompt + completion).")
    threads: int = Field(2, ge=1, description="CPU threads the engine uses for inference.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run; auto picks CUDA if present.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weight dtype (transformers): auto is float32 on CPU, the checkpoint's dtype on CUDA."
    )
    quantization: Optional[str] = Field(None, description="Quantization applied at load (backend-specific).")
    max_memory: Optional[str] = Field(None, description="Memory cap for the weights, e.g. `2GiB`.")
    default_max_tokens: int = Field(
        512, ge=1, description="Completion tokens when a request gives no max_tokens (capped by the context)."
    )
    stream_interval_ms: float = Field(
        50, ge=0, description="Streamed text is sent at most this often after the first token (0: every token); "
        "with more than 4 streams on a replica the interval grows with them (x streams/4, at most x8)."
    )
    chat_format: Optional[str] = Field(
        None, description="Chat template name used when the weights carry none (llama.cpp names, e.g. `gemma`)."
    )
    chat_template: Optional[str] = Field(
        None, description="A Jinja chat template that replaces the weights' own (GGUF metadata, tokenizer "
        "config): the template text itself, or the path of a `.jinja` file (absolute, or relative to "
        "models.json's folder). Checked at load. A template that reads `tools` renders the request's tools "
        "(docs/structured-output.md)."
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters, name -> path (same forms as `path`): peft folders for transformers "
        "models, GGUF LoRA files for gguf models; a request picks one with "
        "`\"model\": \"<model>:<adapter>\"`. Loaded on first use.",
    )
    max_adapters: int = Field(2, ge=1, description="Adapters kept loaded per replica; the least recently used goes.")
    description: Optional[str] = Field(None, description="Free text shown in model listings.")
    num_cpus: float = Field(0.1, gt=0, description="Ray CPUs reserved per replica (fractional allowed).")
    memory: Optional[int] = Field(None, ge=0, description="Ray memory (bytes) reserved per replica.")
    max_ongoing_requests: Optional[int] = Field(
        None, ge=1, description="Requests one replica accepts at once (running plus waiting). Default: "
        "for text models `parallel` + `max_queued` + 8 (so the engine, not Ray, holds the queue), else 64."
    )
    parallel: Optional[int] = Field(
        None, ge=1, le=256, description="Text models: sequences one replica decodes together (`context_length` "
        "tokens of KV cache each: llama.cpp sequence slots for gguf, rows of one padded batch for transformers "
        "and onnx). Default: as many as `kv_cache_budget` holds, at most 16; 1 decodes one request at a time."
    )
    kv_cache_budget: str = Field(
        "1GiB", description="Text models: KV-cache memory that sizes the default `parallel` (e.g. `1GiB`, `4GiB`)."
    )
    max_queued: int = Field(
        256, ge=0, description="Text models: requests one replica holds waiting for a slot; past it (or past an "
        "estimated wait of `max_queue_wait_s`) a request is answered 503 with Retry-After at once."
    )
    max_queue_wait_s: Optional[float] = Field(
        None, gt=0, description="Text models: refuse a request whose estimated wait for a slot passes this. "
        "Default: REQUEST_TIMEOUT_S (waiting longer would time out anyway)."
    )
    interactive_reserve: Optional[int] = Field(
        None, ge=0, description="Text models: slots that `batch`-priority work never takes, kept for interactive "
        "requests. Default: 1 when `parallel` >= 2, else 0."
    )
    prefix_reuse: bool = Field(
        True, description="gguf: a request sharing a prefix with a free slot's cached tokens prefills only the rest."
    )
    saved_prompt_budget: str = Field(
        "512MiB", description="gguf: host memory for conversations' KV saved when their slot is given to "
        "another chat, restored when the conversation's next turn comes (a chat's turn then prefills only "
        "its new tokens); least recently used out first; `0` turns it off. Count it in `memory`."
    )
    mmap: bool = Field(
        True, description="gguf: map the weights file (llama.cpp's default). false: read the weights into memory; "
        "for K-quants, whose weights llama.cpp repacks into a copy, RSS then holds them once instead of twice "
        "(docs/sizing.md)."
    )
    batch_tokens: int = Field(
        512, ge=16, le=8192, description="Text models: tokens per engine step. gguf: one llama_decode over the "
        "next token of every sequence plus prompt chunks (a longer prompt is prefilled over several steps); "
        "transformers, onnx: prompt tokens prefilled before the next decode step (at least one prompt)."
    )
    batch_window_ms: float = Field(
        0, ge=0, le=1000, description="embed: how long a request waits for concurrent ones to share its "
        "forward pass (longer only while the previous pass runs); 0: no wait."
    )
    max_batch_size: int = Field(
        32, ge=1, le=4096, description="embed: most inputs in one forward pass (concurrent requests "
        "together; one larger request runs in passes of this size)."
    )
    preload: bool = Field(False, description="Keep one replica loaded even when idle (min_replicas 1).")
    eviction: Optional[Literal["none", "lru"]] = Field(
        None, description="When loading this model would pass MODEL_MEMORY_BUDGET: `lru` unloads the least "
        "recently used idle models first, `none` refuses (409). Default: MODEL_EVICTION."
    )
    idle_timeout_s: float = Field(
        300, ge=0, description="Seconds without requests before the last replica is removed and the model's "
        "memory returns to the OS (when min_replicas is 0)."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Custom Ray resources each replica needs, e.g. {\"worker_node\": 1}: the replica is placed "
            "only on nodes started with `ray start --resources` offering them (pins a model to nodes)."
        ),
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)

    def slots_hint(self) -> int:
        """Slots a replica has, as far as is known before it loads (auto sizing: at most 16)."""
        return self.parallel or 16 if self.task == "generate" else 1

    def ongoing_limit(self) -> int:
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        return self.slots_hint() + self.max_queued + 8 if self.task == "generate" else 64

    def reserve(self, parallel: int) -> int:
        reserve = self.interactive_reserve if self.interactive_reserve is not None else (1 if parallel >= 2 else 0)
        return min(reserve, max(0, parallel - 1))

    def min_replicas(self, is_default: bool) -> int:
        if self.autoscaling.min_replicas is not None:
            return self.autoscaling.min_replicas
        return 1 if (self.preload or is_default) else 0

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, str]) -> dict[str, str]:
        for name in adapters:
            if not name or ":" in name or name != name.strip():
                raise ValueError(f"adapter name {name!r} is not usable (non-empty, no ':' or edge spaces)")
        return adapters


class ModelsFile(BaseModel):
    """The whole registry file."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelConfig] = Field(description="Model name -> configuration.")

    @field_validator("models")
    @classmethod
    def _names_usable(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        if not models:
            raise ValueError("at least one model must be configured")
        for name in models:
            if not name or ":" in name or name != name.strip():
                raise ValueError(f"model name {name!r} is not usable (non-empty, no ':' or edge spaces)")
        return models


class ModelConfigError(ValueError):
    """models.json is missing or invalid; the message names the model and field."""


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) >= 2 and loc[0] == "models":
            where = f"model {loc[1]!r}, field {'.'.join(str(p) for p in loc[2:]) or '(entry)'}"
        else:
            where = "field " + ".".join(str(p) for p in loc)
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def _read_templates(models: ModelsFile, source: str, config_dir: Optional[Path]) -> ModelsFile:
    """Each `chat_template` as its text (a file read), compiled once here so that a broken one
    fails the load naming its model."""
    from deployments.chat_template import check_template, read_template

    for name, config in models.models.items():
        if config.chat_template is None:
            continue
        try:
            text = read_template(config.chat_template, config_dir)
            check_template(text)
        except ValueError as error:
            raise ModelConfigError(f"{source}: model {name!r}, field chat_template: {error}") from None
        models.models[name] = config.model_copy(update={"chat_template": text})
    return models


def parse_models(data: dict, source: str = "models config", config_dir: Optional[Path] = None) -> ModelsFile:
    """`config_dir`: where relative template files are (models.json's folder; else the working directory)."""
    try:
        models = ModelsFile.model_validate(data)
    except ValidationError as exc:
        raise ModelConfigError(f"{source}: {_describe(exc)}") from None
    return _read_templates(models, source, config_dir)


def load_models_file(path: Path) -> ModelsFile:
    if not path.is_file():
        raise ModelConfigError(f"model config {path} not found (set MODEL_CONFIG_PATH)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON ({exc})") from None
    return parse_models(data, str(path), path.parent)
