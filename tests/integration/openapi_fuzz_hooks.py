"""schemathesis hooks of test_openapi_fuzz.py (loaded by the CLI through SCHEMATHESIS_HOOKS).

They keep schema-valid (positive) generation requests cheap and within what the schema cannot say,
and change nothing else: the server and its schema are tested as they are.
- Cheap: `max_tokens` at most MAX_TOKENS (an absent one is set), prompts and message contents at
  most PROMPT_CHARS characters, at most MESSAGES plainly valid messages (others are all kept),
  EMBED_INPUTS embedding inputs, a session of its own for each case (a valid `session_id` suffixed).
- What JSON Schema cannot state, so a schema-valid request could still be refused:
  * a model's context is counted in tokens (400 context_length_exceeded): the cheap bounds above
    keep every prompt far inside the 2048-token contexts of the test models (256 for embeddings);
  * `dimensions` must equal the embedding model's size (400): positive cases send none;
  * `n` above 1 does not combine with `session_id` (400);
  * a key's `default_model` must be one of its `models` (400), also against the stored key on a
    PATCH: positive cases add it to `models`; a PATCH of one of them clears the other;
  * all messages together, not each one, are limited to MAX_PROMPT_LENGTH (kept by PROMPT_CHARS);
  * `email` options need `"format": "email"`, which cannot stream, and `quote_original` needs
    `original` (400): positive cases with `email` options ask for that format, unstreamed.
  * only assistant messages carry `tool_calls`, and only they may have null content (400):
    positive cases drop other messages' calls and give their null content an empty text;
  * a JSON schema (`response_format`, tool `parameters`) must itself be a valid schema the
    grammar can enforce, tool names must differ, a named `tool_choice` must be among the tools,
    and a `logit_bias` token id must exist in the model's vocabulary (400): positive cases send
    no schema (any object), one tool, `auto` and no logit bias (a JSON format beside the tools
    stays: it shapes `auto`'s text answer);
  * `top_logprobs` above 0 needs `logprobs: true` (400): positive cases with alternatives ask for it.
Only values the schema allows are changed, into values it allows: schemathesis decides after this
hook whether a case is valid (it re-checks edited cases), and an invalid value stays as generated.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

from serve_app.protocol.common import SESSION_ID_PATTERN
from tests.integration.conftest import MAX_PROMPT_LENGTH

MAX_MESSAGES = 256  # the server's MAX_MESSAGES (the default)
MAX_EMBEDDING_INPUTS = 2048

MAX_TOKENS = 4
# Generated text is mostly rare Unicode, up to 3 tokens a character: 6 messages of 200 characters
# came to 1,900 tokens, prefilled for seconds and near the 2048-token context; 6 of 50 stay under 1,000.
PROMPT_CHARS = 50
MESSAGES = 6
EMBED_INPUTS = 8
_SESSION_SUFFIX = itertools.count()
GENERATION_PATHS = {"/api/v1/generate", "/api/v1/chat", "/v1/completions", "/v1/chat/completions"}
BATCH_PATHS = {"/api/v1/generate/batch", "/api/v1/generate/batch/jobs"}
EMBEDDING_PATHS = {"/api/v1/embeddings", "/v1/embeddings"}


def _is_count(value: Any) -> bool:
    """An integer as JSON Schema sees one (3.0 included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value[:PROMPT_CHARS] if len(value) <= MAX_PROMPT_LENGTH else value
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value


ROLES = {"system", "developer", "user", "assistant", "tool"}


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_PROMPT_LENGTH


def _plainly_valid(message: Any) -> bool:
    """A message the schema surely accepts (other keys are ignored there): a known role, and text or
    text parts within the length limit."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in ROLES:
        return False
    content = message.get("content")
    if isinstance(content, list):
        return all(isinstance(p, dict) and p.get("type") == "text" and _short_text(p.get("text")) for p in content)
    return _short_text(content)


def _cheap_generation(body: dict) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        if _is_count(body.get(field)) and body[field] > MAX_TOKENS:
            body[field] = MAX_TOKENS
    if body.get("max_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
    if _is_count(body.get("n")) and body["n"] > 1 and isinstance(body.get("session_id"), str):
        body["n"] = 1  # a session keeps one answer a turn: n above 1 with session_id is a 400
    session = body.get("session_id")
    if isinstance(session, str) and re.fullmatch(SESSION_ID_PATTERN, session):
        # Its own session for each case: cases that drew the same id (the schema's example, "0")
        # grew one chat to 1,600 tokens, each turn prefilled anew for seconds, its prefix changed by
        # the case's tools and format. A chat over several turns: test_cache_sessions.py and others.
        body["session_id"] = f"{session[:120]}-{next(_SESSION_SUFFIX)}"
    if "prompt" in body:
        body["prompt"] = _short(body["prompt"])
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) <= MAX_MESSAGES:
        # Only plainly valid messages are dropped (the oldest first): dropping an invalid one
        # would turn a negative case into a valid request, which the server then rightly serves.
        plain = [i for i, m in enumerate(messages) if _plainly_valid(m)]
        dropped = set(plain[:max(0, len(plain) - MESSAGES)])
        body["messages"] = messages = [m for i, m in enumerate(messages) if i not in dropped]
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = _short(message["content"])
            elif isinstance(message, dict) and isinstance(message.get("content"), list):
                for part in message["content"]:
                    if isinstance(part, dict) and "text" in part:
                        part["text"] = _short(part["text"])


def _valid_call(call: Any) -> bool:
    """A tool call the schema accepts (other keys are ignored there)."""
    function = call.get("function") if isinstance(call, dict) else None
    return (isinstance(function, dict) and call.get("type", "function") == "function"
            and isinstance(call.get("id"), str) and 0 < len(call["id"]) <= 128
            and isinstance(function.get("name"), str) and 0 < len(function["name"]) <= 64
            and isinstance(function.get("arguments"), str))


def _valid_tool(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (set(tool or ()) == {"type", "function"} and tool["type"] == "function" and isinstance(function, dict)
            and set(function) <= {"name", "description", "parameters", "strict"}
            and isinstance(function.get("name"), str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"])
            and (function.get("parameters") is None or isinstance(function["parameters"], dict))
            and (function.get("description") is None or (isinstance(function["description"], str)
                                                         and len(function["description"]) <= 4096))
            and function.get("strict") in (None, True, False))


def _consistent_tools(body: dict) -> None:
    """Edits only values the schema allows (see the module's docstring), into values it allows."""
    for message in body.get("messages") if isinstance(body.get("messages"), list) else ():
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():  # their arguments are prompt text too
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                call["function"]["arguments"] = _short(call["function"].get("arguments"))
        if message.get("role") != "assistant" and isinstance(calls, list) and all(map(_valid_call, calls)):
            del message["tool_calls"]
        if message.get("content") is None and not (message.get("role") == "assistant" and message.get("tool_calls")):
            message["content"] = ""  # absent or null
    tools = body.get("tools")
    if isinstance(tools, list) and tools and len(tools) <= 64 and all(map(_valid_tool, tools)):
        body["tools"] = tools = tools[:1]
        tools[0]["function"]["parameters"] = None
        tools[0]["function"]["description"] = _short(tools[0]["function"].get("description"))
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function" and set(choice) == {"type", "function"} \
                and isinstance(choice["function"], dict) and set(choice["function"]) == {"name"} \
                and isinstance(choice["function"]["name"], str):
            body["tool_choice"] = "auto"
    spec = body.get("response_format")
    if isinstance(spec, dict) and isinstance(spec.get("json_schema"), dict) \
            and isinstance(spec["json_schema"].get("schema"), dict):
        spec["json_schema"]["schema"] = None
    if isinstance(spec, dict) and spec.get("type") in ("text", "json_object", "json_schema"):
        if spec["type"] != "json_schema" and isinstance(spec.get("json_schema"), dict):
            spec["json_schema"] = None  # the schema comes with type json_schema only (400)
        elif spec["type"] == "json_schema" and spec.get("json_schema") is None:
            spec["type"] = "json_object"
    top = body.get("top_logprobs")
    if _is_count(top) and 0 < top <= 20 and body.get("logprobs") in (None, False):  # 11.0 counts too
        body["logprobs"] = True  # alternatives need logprobs: true (400)
    bias = body.get("logit_bias")
    if isinstance(bias, dict) and len(bias) <= 300 and all(
            re.fullmatch(r"[0-9]{1,9}", k) and type(v) in (int, float) and -100 <= v <= 100 for k, v in bias.items()):
        body["logit_bias"] = {}


def _consistent_email(body: dict) -> None:
    email = body.get("email")
    if isinstance(email, dict) and body.get("format") in ("text", None):
        body["format"] = "email"
        if email.get("quote_original") is True and not email.get("original"):
            email["quote_original"] = False
    if body.get("format") == "email" and body.get("stream") is True:
        body["stream"] = False


def _cheap_embedding(body: dict) -> None:
    if _is_count(body.get("dimensions")) and body["dimensions"] >= 1:
        del body["dimensions"]
    if isinstance(body.get("input"), list) and len(body["input"]) <= MAX_EMBEDDING_INPUTS:
        body["input"] = _short(body["input"][:EMBED_INPUTS])
    elif isinstance(body.get("input"), str):
        body["input"] = _short(body["input"])


def _consistent_key(body: dict, method: str) -> None:
    models, default = body.get("models"), body.get("default_model")
    if isinstance(models, list) and isinstance(default, str) and default not in models:
        models.append(default)
    elif method == "PATCH" and isinstance(models, list) and "default_model" not in body:
        body["default_model"] = None  # the stored default may not be among the new models
    elif method == "PATCH" and isinstance(default, str) and "models" not in body:
        body["models"] = None  # nor the new default among the stored models: allow every model


STEP_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_BUCKETS = 1500  # serve_app/access/usage.py: the most buckets one usage read spans


def _integer(value: Any) -> Any:
    """A query value as the server reads it (the coverage phase may send numbers as text)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value if _is_count(value) else None


def _usage_range(query: dict) -> None:
    """`end` after `start`, at most MAX_BUCKETS steps apart (400 otherwise): an `end` that breaks
    this becomes one step after `start` (a value the schema allows)."""
    step = query.get("step", "hour")
    step = STEP_SECONDS.get(step) if isinstance(step, str) else None
    start, end = _integer(query.get("start")), _integer(query.get("end"))
    if step is None or start is None or ("end" in query and end is None):
        return  # a negative case (or no start: the server's defaults are consistent)
    if end is None or end <= start or (end - start) / step > MAX_BUCKETS - 1:  # an unaligned start adds one
        query["end"] = int(start) + step


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path == "/api/v1/usage":
        for query in (case.query, kwargs.get("params")):  # the call's own copy is what is sent
            if isinstance(query, dict):
                _usage_range(query)
    body, path = case.body, case.operation.path
    if not isinstance(body, dict):
        return
    if path in GENERATION_PATHS:
        _cheap_generation(body)
        _consistent_tools(body)
        if path.startswith("/api/v1/"):
            _consistent_email(body)
    elif path in BATCH_PATHS:
        items = body.get("items")
        for item in items if isinstance(items, list) else ():  # negative cases send anything
            if isinstance(item, dict):
                _cheap_generation(item)
                _consistent_tools(item)
    elif path in EMBEDDING_PATHS:
        _cheap_embedding(body)
    elif path.startswith("/api/v1/keys"):
        _consistent_key(body, case.method.upper())
