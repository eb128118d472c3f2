"""Tool calls: one path for every channel, in the format the model's chat template calls for.

`ToolUse.for_model` picks the format from the template (deployments/chat_template.py tool_format):
a template that renders tools gets them natively (`template_tools`, `for_template` keeps the
conversation's calls and results as messages) and, when it writes `<tool_call>` blocks, answers in
the Hermes format (serve_app/hermes_tools.py); every other model gets llama.cpp's generic format,
which any model with a chat template can follow (below). The channel reads either through the
`ToolAnswer` its Generation hands out, never knowing which.

The tools are described in a system message; the model answers one JSON object, generated under
a grammar built from the tools' parameter schemas:
- `{"tool_call": {"name": ..., "arguments": {...}}}` (or `{"tool_calls": [...]}` when parallel
  calls are allowed): the calls, whose arguments always validate against their function's schema;
- `{"response": "..."}`: a text answer (only with `tool_choice: "auto"`); with a JSON
  `response_format` its value is a JSON value generated under the response's schema instead.
`tool_choice` `required` or a named function leaves out the `response` branch (and the other
functions), so a response_format changes nothing there. Earlier calls and tool results go back
into the conversation as the same JSON text, so the model sees its own format (`calls_as_text`,
`result_as_text`). Every channel takes this one path: the GenerationService applies a `ToolUse`
(`for_model`, `constrain`, `prompt`) and the channel reads the answer with `Generation.tool_answer()`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Optional

from core.errors import InvalidRequest
from core.types import SamplingParams
from serve_app.hermes_tools import HermesScanner, hermes_grammar
from serve_app.structured_output import PARAM as RESPONSE_SCHEMA_PARAM
from serve_app.structured_output import schema_grammar
from serve_app.tool_stream import AnswerScanner, ArgumentsPiece, CallStart, Event, TextPiece

MAX_PARALLEL_CALLS = 8

TOOLS_PROMPT = "You can call these tools (JSON Schema of each one's arguments):\n{tools}\n\n"
SHAPE_PROMPT = "Answer with one JSON object: {shape}."
AUTO_SHAPE = ('either {"tool_call": {"name": <tool name>, "arguments": {...}}} to call a tool, '
              'or {"response": <your answer>} to answer the user directly')
RESPONSE_SCHEMA_NOTE = ", where <your answer> is a JSON value valid under this JSON Schema: {schema}"
REQUIRED_SHAPE = '{"tool_call": {"name": <tool name>, "arguments": {...}}} to call a tool'
PARALLEL_NOTE = ' (or {"tool_calls": [...]} to call several at once)'


def _arguments(call: dict):
    """A call's arguments as the model wrote them: the JSON value, or the text when it is no JSON."""
    try:
        return json.loads(call["function"]["arguments"])
    except ValueError:
        return call["function"]["arguments"]


def calls_as_text(calls: list[dict], content: str = "") -> str:
    """An assistant's earlier calls (OpenAI's shape), as the model writes them in the generic format."""
    listed = [{"name": c["function"]["name"], "arguments": _arguments(c), "id": c["id"]} for c in calls]
    data = {"tool_call": listed[0]} if len(listed) == 1 else {"tool_calls": listed}
    if content:
        data["response"] = content
    return json.dumps(data, ensure_ascii=False)


def result_as_text(tool_call_id: Optional[str], content: str) -> str:
    """A tool's result, handed back to the model as a user turn (every template takes those)."""
    return json.dumps({"tool_response": {"tool_call_id": tool_call_id, "content": content}}, ensure_ascii=False)


def for_template(messages: list[dict], native: bool) -> list[dict]:
    """The conversation as the model's chat template takes it. `native` (a template that renders
    tools): assistant `tool_calls` (their arguments as JSON values, as HF templates read them) and
    `tool` messages as they are; otherwise both become JSON text in the generic format."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls and native:
            message = {**message, "tool_calls": [{**c, "function": {**c["function"], "arguments": _arguments(c)}}
                                                 for c in calls]}
        elif calls:
            message = {"role": "assistant", "content": calls_as_text(calls, message["content"])}
        elif message["role"] == "tool" and not native:
            message = {"role": "user", "content": result_as_text(message.get("tool_call_id"), message["content"])}
        out.append(message)
    return out


def message_text(message: dict) -> str:
    """What a message holds for the model, for size limits and content checks: its text and its calls."""
    calls = message.get("tool_calls")
    return message["content"] + (json.dumps(calls, ensure_ascii=False) if calls else "")


@dataclass(frozen=True)
class OutputCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class ToolUse:
    """The tools of one chat request and how the model may use them."""

    tools: tuple  # protocol Tool models
    choice: str  # "auto", "required" or a function's name
    parallel: bool
    response_schema: Optional[dict] = None  # what a text answer must be (a JSON response_format), with auto
    response_strict: bool = True
    native: bool = False  # the model's chat template renders the tools (for_model)
    format: str = "generic"  # how the answer is written: "generic" (one JSON object) or "hermes"

    @classmethod
    def of(cls, tools, tool_choice, parallel_tool_calls, response_format=None) -> Optional["ToolUse"]:
        """The request's tools, or None (no tools, or `none`: then only response_format constrains).
        `response_format` is the protocol ResponseFormat: a JSON one shapes the text answer of `auto`."""
        if not tools or tool_choice == "none":
            return None
        names = [t.function.name for t in tools]
        if len(set(names)) != len(names):
            raise InvalidRequest("tools: two tools have the same name", param="tools")
        choice = tool_choice or "auto"
        if not isinstance(choice, str):
            choice = choice.function.name
            if choice not in names:
                raise InvalidRequest(f"tool_choice names {choice!r}, which is not among the tools",
                                     param="tool_choice")
        schema, strict = None, True
        if choice == "auto" and response_format is not None and response_format.type != "text":
            spec = response_format.json_schema
            schema = (spec.json_schema if spec is not None else None) or {"type": "object"}
            strict = spec is None or spec.strict is not False
        return cls(tuple(tools), choice, parallel_tool_calls is not False, schema, strict)

    def for_model(self, tool_format: Optional[str]) -> "ToolUse":
        """These tools for a model whose template takes them so (ModelEntry.tool_format): None, the
        generic prompt; "hermes", rendered by the template and answered in <tool_call> blocks;
        "generic", rendered by the template and answered as the generic JSON object."""
        if tool_format is None:
            return self
        return replace(self, native=True, format="hermes" if tool_format == "hermes" else "generic")

    def template_tools(self) -> Optional[tuple[dict, ...]]:
        """The tools as the chat template takes them (OpenAI's shape), when it renders them."""
        if not self.native:
            return None
        return tuple({"type": "function", "function": {"name": t.function.name,
                                                       "description": t.function.description or "",
                                                       "parameters": t.function.parameters or {"type": "object"}}}
                     for t in self._chosen)

    @cached_property
    def _chosen(self) -> list:
        """The tools the model may call, in their order; once per request (schema, grammar, prompt)."""
        if self.choice in ("auto", "required"):
            return list(self.tools)
        return [t for t in self.tools if t.function.name == self.choice]

    def call_schema(self) -> dict:
        """One call: `{"name": ..., "arguments": {...}}` of one of the chosen tools."""
        calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                  "properties": {"name": {"const": tool.function.name},
                                 "arguments": tool.function.parameters or {"type": "object"}}}
                 for tool in self._chosen]
        return calls[0] if len(calls) == 1 else {"anyOf": calls}

    def answer_schema(self) -> dict:
        call = self.call_schema()
        branches = [{"type": "object", "additionalProperties": False, "required": ["tool_call"],
                     "properties": {"tool_call": call}}]
        if self.parallel:
            branches.append({"type": "object", "additionalProperties": False, "required": ["tool_calls"],
                             "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                                           "maxItems": MAX_PARALLEL_CALLS}}})
        if self.choice == "auto":
            branches.append({"type": "object", "additionalProperties": False, "required": ["response"],
                             "properties": {"response": self.response_schema or {"type": "string"}}})
        return branches[0] if len(branches) == 1 else {"anyOf": branches}

    def grammar(self) -> str:
        for index, tool in enumerate(self.tools):  # each schema alone first: errors name their tool
            if tool.function.parameters is not None:
                schema_grammar(tool.function.parameters, strict=bool(tool.function.strict),
                               param=f"tools[{index}].function.parameters")
        if self.response_schema is not None:
            schema_grammar(self.response_schema, strict=self.response_strict, param=RESPONSE_SCHEMA_PARAM)
        strict = all(bool(t.function.strict) for t in self._chosen) and self.response_strict
        if self.format == "hermes":
            return self._hermes_grammar(strict)
        return schema_grammar(self.answer_schema(), strict=strict, param="tools")

    def _hermes_grammar(self, strict: bool) -> str:
        text = None
        if self.choice == "auto" and self.response_schema is not None:
            text = schema_grammar(self.response_schema, strict=self.response_strict, param=RESPONSE_SCHEMA_PARAM)
        return hermes_grammar(schema_grammar(self.call_schema(), strict=strict, param="tools"),
                              MAX_PARALLEL_CALLS if self.parallel else 1, text, free_text=self.choice == "auto")

    def constrain(self, sampling: SamplingParams) -> SamplingParams:
        """The sampling with the answer's grammar in place of a response_format's (which, with
        `auto`, now shapes the `response` branch instead)."""
        return replace(sampling, grammar=self.grammar())

    @cached_property
    def _answer_shape(self) -> str:
        """The generic answer's shape, as the system message tells it."""
        shape = AUTO_SHAPE if self.choice == "auto" else REQUIRED_SHAPE
        if self.response_schema is not None:
            shape += RESPONSE_SCHEMA_NOTE.format(schema=json.dumps(self.response_schema, ensure_ascii=False))
        return SHAPE_PROMPT.format(shape=shape + (PARALLEL_NOTE if self.parallel else ""))

    @cached_property
    def _description(self) -> str:
        described = [{"name": t.function.name, "description": t.function.description or "",
                      "parameters": t.function.parameters or {"type": "object"}} for t in self._chosen]
        return TOOLS_PROMPT.format(tools=json.dumps(described, ensure_ascii=False)) + self._answer_shape

    def answer(self) -> "ToolAnswer":
        """A reader of one answer in this format."""
        return ToolAnswer(HermesScanner() if self.format == "hermes" else AnswerScanner())

    def described(self) -> str:
        """The tools' description, as the system message carries it."""
        return self._description

    def prompt(self, messages: list[dict]) -> list[dict]:
        """The conversation with the tools described in its system message; with a template that
        renders the tools, as it is (hermes) or with the answer's shape alone (generic)."""
        if self.native and self.format == "hermes":
            return messages
        text = self._answer_shape if self.native else self._description
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}] + messages[1:]
        return [{"role": "system", "content": text}] + messages


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolAnswer:
    """One answer read as it streams (any channel): the text answer's pieces as they come, the
    calls once complete. A call's id is made when its name is complete, so a stream and the
    answer read at the end name it alike."""

    def __init__(self, scanner=None):
        self.scanner = scanner if scanner is not None else AnswerScanner()  # or a HermesScanner
        self.ids: list[str] = []
        self.raw: list[str] = []

    @classmethod
    def whole(cls, text: str, scanner=None) -> "ToolAnswer":
        """A whole answer, read at once."""
        answer = cls(scanner)
        answer.feed(text)
        answer.finish()
        return answer

    def read(self, text: str, finish_reason: str) -> tuple[Optional[str], list["OutputCall"], str]:
        """A whole answer, read at once with this reader: (content, calls, finish_reason)."""
        self.feed(text)
        self.finish()
        return self.result(finish_reason)

    def feed(self, text: str) -> list[Event]:
        self.raw.append(text)
        events = self.scanner.feed(text)
        self.ids += [new_call_id() for e in events if isinstance(e, CallStart)]
        return events

    def finish(self) -> list[Event]:
        return self.scanner.finish()

    def text(self, events: list[Event]) -> str:
        return "".join(e.text for e in events if isinstance(e, TextPiece))

    def result(self, finish_reason: str) -> tuple[Optional[str], list[OutputCall], str]:
        """(content, calls, finish_reason). An answer cut short (no complete JSON: `length`) is
        returned as its text, never as a half call."""
        scanner = self.scanner
        if not scanner.complete:
            return "".join(self.raw), [], finish_reason
        if not scanner.calls:
            return "".join(scanner.text), [], finish_reason
        calls = [OutputCall(id=self.ids[i], name=c.name, arguments=c.arguments) for i, c in enumerate(scanner.calls)]
        return None, calls, "tool_calls"


def read_answer(text: str, finish_reason: str) -> tuple[Optional[str], list[OutputCall], str]:
    """(content, calls, finish_reason) of a whole answer in the generic format (ToolAnswer.result).
    The arguments are the model's own JSON text, as a stream sends them."""
    return ToolAnswer.whole(text).result(finish_reason)


__all__ = ["ArgumentsPiece", "CallStart", "TextPiece", "ToolAnswer", "ToolUse", "read_answer"]
