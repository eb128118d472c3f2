"""Tool calls in llama.cpp's generic format, which any model with a chat template can follow.

The tools are described in a system message; the model answers one JSON object, generated under
a grammar built from the tools' parameter schemas:
- `{"tool_call": {"name": ..., "arguments": {...}}}` (or `{"tool_calls": [...]}` when parallel
  calls are allowed): the calls, whose arguments always validate against their function's schema;
- `{"response": "..."}`: a text answer (only with `tool_choice: "auto"`).
`tool_choice` `required` or a named function leaves out the `response` branch (and the other
functions). Earlier calls and tool results go back into the conversation as the same JSON text,
so the model sees its own format (`calls_as_text`, `result_as_text`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from core.errors import InvalidRequest
from serve_app.structured_output import schema_grammar

MAX_PARALLEL_CALLS = 8

TOOLS_PROMPT = (
    "You can call these tools (JSON Schema of each one's arguments):\n{tools}\n\n"
    "Answer with one JSON object: {shape}."
)
AUTO_SHAPE = ('either {"tool_call": {"name": <tool name>, "arguments": {...}}} to call a tool, '
              'or {"response": <your answer>} to answer the user directly')
REQUIRED_SHAPE = '{"tool_call": {"name": <tool name>, "arguments": {...}}} to call a tool'
PARALLEL_NOTE = ' (or {"tool_calls": [...]} to call several at once)'


def calls_as_text(calls, content: str = "") -> str:
    """An assistant's earlier calls, as the model writes them."""
    listed = []
    for call in calls:
        try:
            arguments = json.loads(call.function.arguments)
        except ValueError:
            arguments = call.function.arguments
        listed.append({"name": call.function.name, "arguments": arguments, "id": call.id})
    data = {"tool_call": listed[0]} if len(listed) == 1 else {"tool_calls": listed}
    if content:
        data["response"] = content
    return json.dumps(data, ensure_ascii=False)


def result_as_text(tool_call_id: Optional[str], content: str) -> str:
    """A tool's result, handed back to the model as a user turn (every template takes those)."""
    return json.dumps({"tool_response": {"tool_call_id": tool_call_id, "content": content}}, ensure_ascii=False)


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

    @classmethod
    def of(cls, tools, tool_choice, parallel_tool_calls) -> Optional["ToolUse"]:
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
        return cls(tuple(tools), choice, parallel_tool_calls is not False)

    @cached_property
    def _chosen(self) -> list:
        """The tools the model may call, in their order; once per request (schema, grammar, prompt)."""
        if self.choice in ("auto", "required"):
            return list(self.tools)
        return [t for t in self.tools if t.function.name == self.choice]

    def answer_schema(self) -> dict:
        calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                  "properties": {"name": {"const": tool.function.name},
                                 "arguments": tool.function.parameters or {"type": "object"}}}
                 for tool in self._chosen]
        call = calls[0] if len(calls) == 1 else {"anyOf": calls}
        branches = [{"type": "object", "additionalProperties": False, "required": ["tool_call"],
                     "properties": {"tool_call": call}}]
        if self.parallel:
            branches.append({"type": "object", "additionalProperties": False, "required": ["tool_calls"],
                             "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                                           "maxItems": MAX_PARALLEL_CALLS}}})
        if self.choice == "auto":
            branches.append({"type": "object", "additionalProperties": False, "required": ["response"],
                             "properties": {"response": {"type": "string"}}})
        return branches[0] if len(branches) == 1 else {"anyOf": branches}

    def grammar(self) -> str:
        for index, tool in enumerate(self.tools):  # each schema alone first: errors name their tool
            if tool.function.parameters is not None:
                schema_grammar(tool.function.parameters, strict=bool(tool.function.strict),
                               param=f"tools[{index}].function.parameters")
        strict = all(bool(t.function.strict) for t in self._chosen)
        return schema_grammar(self.answer_schema(), strict=strict, param="tools")

    def prompt(self, messages: list[dict]) -> list[dict]:
        """The conversation with the tools described in its system message."""
        described = [{"name": t.function.name, "description": t.function.description or "",
                      "parameters": t.function.parameters or {"type": "object"}} for t in self._chosen]
        shape = AUTO_SHAPE if self.choice == "auto" else REQUIRED_SHAPE
        text = TOOLS_PROMPT.format(tools=json.dumps(described, ensure_ascii=False),
                                   shape=shape + (PARALLEL_NOTE if self.parallel else ""))
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}] + messages[1:]
        return [{"role": "system", "content": text}] + messages


def read_answer(text: str, finish_reason: str) -> tuple[Optional[str], list[OutputCall], str]:
    """(content, calls, finish_reason) of an answer in the generic format. An answer cut short (no
    complete JSON: `length`) is returned as its text, never as a half call."""
    try:
        data = json.loads(text)
    except ValueError:
        return text, [], finish_reason
    if "response" in data:
        response = data["response"]
        return response if isinstance(response, str) else json.dumps(response), [], finish_reason
    listed = data["tool_calls"] if "tool_calls" in data else [data["tool_call"]]
    calls = [OutputCall(id=f"call_{uuid.uuid4().hex[:24]}", name=c["name"],
                        arguments=json.dumps(c["arguments"], ensure_ascii=False)) for c in listed]
    return None, calls, "tool_calls"
