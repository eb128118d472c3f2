"""A model's chat template: where it comes from, whether it renders tools, and in which format.

The template a replica renders is models.json's `chat_template` when set (inline Jinja text, or a
`.jinja` file), else the weights' own (a GGUF's `tokenizer.chat_template` metadata; a tokenizer
folder's `chat_template.jinja` or `tokenizer_config.json`). The ingress reads the same template
(`model_template`) to choose how tools are used (`tool_format`): both sides decide from one source.
"""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path
from typing import BinaryIO, Optional

from deployments.weights import ASSEMBLE, WeightsNotFound, resolve_weights

TEMPLATE_FILE_SUFFIX = ".jinja"
HERMES_MARK = "<tool_call>"  # Hermes 2 Pro / Qwen 2.5 templates write the calls inside these tags


def is_template_file(value: str) -> bool:
    """A `chat_template` value naming a file (one line ending in `.jinja`), not the template itself."""
    return value.endswith(TEMPLATE_FILE_SUFFIX) and "\n" not in value and "{" not in value


def read_template(value: str, config_dir: Optional[Path]) -> str:
    """The template text of a `chat_template` value: the text itself, or the file's (relative to
    models.json's folder)."""
    if not is_template_file(value):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and config_dir is not None:
        path = config_dir / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"template file {str(path)!r} cannot be read ({error.strerror or error})") from None


def check_template(text: str) -> None:
    """Compile the template as the replicas will (llama-cpp-python's Jinja environment, which
    mirrors transformers'); a template that does not compile raises ValueError."""
    import jinja2
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        Jinja2ChatFormatter(template=text, eos_token="", bos_token="")
    except jinja2.TemplateError as error:
        raise ValueError(f"the chat template does not compile: {error}") from None


def tool_format(template: Optional[str]) -> Optional[str]:
    """How a template takes tools: None (it never reads `tools`: the generic tool prompt is used),
    `hermes` (it writes calls as <tool_call> blocks) or `generic` (it renders tools its own way; the
    answer stays the generic JSON object)."""
    if not template or "tools" not in template:
        return None
    return "hermes" if HERMES_MARK in template else "generic"


# GGUF metadata value types (gguf.GGUFValueType) and the byte size of the fixed-size ones.
_STRING, _ARRAY = 8, 9
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _string(file: BinaryIO) -> bytes:
    (length,) = struct.unpack("<Q", file.read(8))
    return file.read(length)


def _skip(file: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(length, 1)
    elif kind == _ARRAY:
        item, count = struct.unpack("<IQ", file.read(12))
        if item in _SIZES:
            file.seek(_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip(file, item)
    else:
        file.seek(_SIZES[kind], 1)


def gguf_template(path: Path) -> Optional[str]:
    """`tokenizer.chat_template` from a GGUF file's header (the tensors are never read)."""
    with open(path, "rb") as file:
        if file.read(4) != b"GGUF":
            return None
        _version, _tensors, count = struct.unpack("<IQQ", file.read(20))
        for _ in range(count):
            key = _string(file)
            (kind,) = struct.unpack("<I", file.read(4))
            if key == b"tokenizer.chat_template" and kind == _STRING:
                return _string(file).decode("utf-8")
            _skip(file, kind)
    return None


def folder_template(folder: Path) -> Optional[str]:
    """A tokenizer folder's template, as transformers reads it."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def _local(path: str, cache_dir: Path, config_dir: Optional[Path]) -> Optional[Path]:
    """The file `path` names if it is already here; assembled weights are not built for this."""
    if path.startswith(ASSEMBLE):
        package = path[len(ASSEMBLE):].strip("/")
        target = cache_dir / package / importlib.import_module(package).MODEL_NAME
        return target if target.is_file() else None
    try:
        return resolve_weights(path, cache_dir, config_dir)
    except WeightsNotFound:
        return None


def model_template(config, cache_dir: Path, config_dir: Optional[Path]) -> Optional[str]:
    """The template the model's replicas render (`config` a ModelConfig whose `chat_template`, when
    set, already holds the text); None when it has none or its weights cannot be read here."""
    if config.chat_template:
        return config.chat_template
    if config.task != "generate":
        return None
    try:
        if config.type == "gguf":
            weights = _local(config.path, cache_dir, config_dir)
            return gguf_template(weights) if weights is not None and weights.is_file() else None
        source = _local(config.tokenizer or config.path, cache_dir, config_dir)
        if source is None:
            return None
        return folder_template(source if source.is_dir() else source.parent)
    except (OSError, ValueError, struct.error, ImportError, AttributeError):
        return None  # unreadable here: the generic tool prompt, which every template takes
