"""`response_format` to a llama.cpp grammar (GBNF): what the GGUF engine constrains decoding with.

The schema is checked here, at the ingress, so that a bad one is a 400 before anything queues:
against the JSON Schema meta-schema (jsonschema), then keyword by keyword against what the
converter enforces (llama-cpp-python's port of llama.cpp's json-schema-to-grammar). With
`strict` (the default, and what the openai SDK's `parse()` sends) an unsupported keyword is a 400
naming it; with `strict: false` it is dropped and the answer follows the rest of the schema.
Grammars are cached per schema text: the same schema compiles once per ingress replica.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Optional

from core.errors import InvalidRequest

MAX_SCHEMA_BYTES = 32 * 1024  # the schema as JSON
MAX_GRAMMAR_BYTES = 128 * 1024  # the grammar made from it (bounded repetitions expand into rules)
MAX_REPETITION = 256  # minItems / maxItems / minLength / maxLength above this are refused
MAX_ENUMERATED_RANGE = 1000  # integer ranges are enforced as a list of their values up to this size
PARAM = "response_format.json_schema.schema"
NON_NEGATIVE = "x-non-negative"  # marks an integer with minimum 0 for _Converter

# Keywords that only describe: they change nothing in what is generated.
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "discriminator"}
# Keywords the grammar enforces.
ENFORCED = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
            "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "pattern", "format",
            "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
FORMATS = {"date", "time", "date-time", "uuid"}


def _refuse(param: str, path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}", param=param, code="unsupported_schema")


def _integer_bounds(schema: dict, param: str, path: str, strict: bool) -> Optional[dict]:
    """What enforces an integer's bounds (the converter enforces none): an enum of its values for a
    range up to MAX_ENUMERATED_RANGE, digits only for `minimum` >= 0 alone; else refused (strict)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + 1
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - 1
    if low is not None and high is not None and 0 <= high - low < MAX_ENUMERATED_RANGE:
        return {"enum": list(range(int(low), int(high) + 1))}
    if low == 0 and high is None:
        return {NON_NEGATIVE: True}
    if strict:
        raise _refuse(param, path, f"an integer range wider than {MAX_ENUMERATED_RANGE} values (or a minimum above 0 "
                      "without a maximum) is not enforced; narrow it or send strict: false")
    return {"type": "integer"}


def _prepare(node: Any, param: str, path: str, strict: bool) -> Any:
    """A copy of the schema the converter can take: bounds turned into what it enforces, annotations
    dropped; an unsupported keyword raises (strict) or is dropped."""
    if isinstance(node, list):
        return [_prepare(item, param, f"{path}[{i}]", strict) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        here = f"{path}.{key}"
        if key in ANNOTATIONS:
            continue
        if key not in ENFORCED:
            if strict:
                raise _refuse(param, here, f"keyword {key!r} is not supported (send strict: false to relax it)")
            continue
        if key in ("properties", "$defs", "definitions"):
            out[key] = {name: _prepare(sub, param, f"{here}.{name}", strict) for name, sub in value.items()}
        elif key in ("items", "prefixItems", "anyOf", "oneOf", "additionalProperties"):
            out[key] = _prepare(value, param, here, strict)
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and value > MAX_REPETITION:
            raise _refuse(param, here, f"{value} is over the limit of {MAX_REPETITION}")
        elif key == "format" and value not in FORMATS:
            if strict:
                raise _refuse(param, here, f"format {value!r} is not supported (supported: {sorted(FORMATS)})")
        else:
            out[key] = value
    bounded = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & out.keys()
    if bounded:
        for key in bounded:
            del out[key]
        if out.get("type") == "integer":
            out.update(_integer_bounds(node, param, path, strict) or {})
            if "enum" in out:
                out.pop("type")
        elif strict:
            raise _refuse(param, f"{path}.{sorted(bounded)[0]}", f"bounds on {out.get('type', 'untyped')} values are "
                          "enforced on integers only (send strict: false to relax it)")
    return out


@lru_cache(maxsize=256)
def _grammar_of(schema_text: str, strict: bool, param: str) -> str:
    schema = json.loads(schema_text)
    _check_schema(schema, param)
    prepared = _prepare(schema, param, param, strict)
    converter = _converter()
    try:
        resolved = converter.resolve_refs(prepared, "input")
        converter.visit(resolved, "")
    except RecursionError:
        raise InvalidRequest(f"{param}: the schema nests too deeply", param=param, code="invalid_schema") from None
    except Exception as error:  # the converter asserts on what it cannot read: the client's schema
        raise InvalidRequest(f"{param}: {error}", param=param, code="invalid_schema") from None
    grammar = _json_strings(converter.format_grammar())
    if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(f"{param}: the grammar made from this schema is over {MAX_GRAMMAR_BYTES} bytes; "
                             "lower its bounds or its size", param=param, code="schema_too_large")
    return grammar


def _json_strings(grammar: str) -> str:
    """JSON strings hold no raw control characters; the converter's `char` and `dot` allow them (a
    newline inside a string is then invalid JSON). llama.cpp's newer converter excludes them too."""
    return (grammar.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
            .replace("dot ::= [^\\x0A\\x0D]", "dot ::= [^\\x00-\\x1F\\x7F]"))


def _converter():
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Converter(SchemaConverter):
        def visit(self, schema, name):
            if isinstance(schema, dict) and schema.get(NON_NEGATIVE):
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule_name, '("0" | [1-9] [0-9]{0,15}) space')
            return super().visit(schema, name)

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _check_schema(schema: Any, param: str) -> None:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be an object", param=param, code="invalid_schema")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        raise InvalidRequest(f"{param}{where}: {error.message}", param=param, code="invalid_schema") from None


def schema_grammar(schema: dict, strict: bool = True, param: str = PARAM) -> str:
    """The grammar of answers valid under `schema`; `param` names the schema in errors."""
    text = json.dumps(schema)  # key order kept: properties are generated in the schema's order
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"{param} is over {MAX_SCHEMA_BYTES} bytes", param=param, code="schema_too_large")
    return _grammar_of(text, strict, param)


def json_object_grammar() -> str:
    """Any JSON object (`response_format: {"type": "json_object"}`)."""
    return schema_grammar({"type": "object"})
