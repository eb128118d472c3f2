"""Tool calls in the Hermes 2 Pro / Qwen 2.5 format, for chat templates that write calls that way.

A call is one block `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (several
blocks, one per line, when parallel calls are allowed). The answer is generated under a grammar:
the calls' JSON from the tools' parameter schemas (so arguments always validate), and with
`tool_choice: "auto"` either the calls or a text answer (`root ::= calls | text`, chosen by the
answer's first character: a text answer never starts with `<`; with a JSON response_format the
text answer is a value under its schema). `HermesScanner` reads such an answer in any pieces and
emits the same events as the generic format's scanner (serve_app/tool_stream.py), so every
channel streams `tool_calls` alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from serve_app.tool_stream import AnswerScanner, Event, TextPiece, merged

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# A grammar's tokens: string literals, character classes, names, anything else one character at a time.
GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[A-Za-z0-9-]+|.', re.S)
# What the inner JSON scanner reads before the first call: the calls then sit at ("tool_calls", i).
CALLS_PREFIX = '{"tool_calls":['
CALL_DEPTH = 2  # the inner scanner's stack between calls: the outer object and the array


def _prefixed(grammar: str, prefix: str) -> str:
    """A converter grammar with every rule renamed `<prefix><name>` (its `root` too), so that two
    grammars can share one file."""
    rules = [line.split(" ::= ", 1) for line in grammar.splitlines() if " ::= " in line]
    names = {name for name, _ in rules}
    renamed = []
    for name, body in rules:
        tokens = [prefix + t if t in names else t for t in GBNF_TOKEN.findall(body)]
        renamed.append(f"{prefix}{name} ::= {''.join(tokens)}")
    return "\n".join(renamed)


def hermes_grammar(call_grammar: str, max_calls: int, text_grammar: Optional[str] = None,
                   free_text: bool = False) -> str:
    """The answer's grammar: 1..max_calls blocks of a call (`call_grammar`: a converter grammar of one
    call's JSON object), or (auto) a text answer: `text_grammar` (a JSON response_format) or any text
    not starting with `<` (`free_text`)."""
    more = ""
    for _ in range(max_calls - 1):  # bounded repetition, written out
        more = f'("\\n" call{" " + more if more else ""})?'
    lines = ['call ::= "<tool_call>\\n" call-root "\\n</tool_call>"',
             f"calls ::= call {more}".rstrip(), _prefixed(call_grammar, "call-")]
    if text_grammar is not None:
        lines += ["root ::= calls | text-root", _prefixed(text_grammar, "text-")]
    elif free_text:
        lines.append("root ::= calls | ([^<] [^\\x00]*)?")
    else:
        lines.append("root ::= calls")
    return "\n".join(lines) + "\n"


@dataclass
class HermesScanner:
    """Feed it the answer's text in any pieces; it returns what each piece completes. The calls'
    JSON goes through the generic scanner, as if it were `{"tool_calls": [...]}`."""

    text: list = field(default_factory=list)  # the text answer's pieces
    complete: bool = False  # a text answer, or every call's JSON closed
    _mode: str = "start"  # "start" (undecided), "text" or "calls"
    _held: str = ""  # characters of a tag not yet complete
    _inner: AnswerScanner = field(default_factory=AnswerScanner)
    _in_call: bool = False  # between <tool_call> and the end of its JSON
    _calls: int = 0

    @property
    def calls(self) -> list:
        """ScannedCall per call seen, in order."""
        return self._inner.calls

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        for char in text:
            self._char(char, events)
        return merged(events)

    def finish(self) -> list[Event]:
        """What the end of the text releases (a lone high surrogate of a cut answer)."""
        return self._inner.finish() if self._mode == "calls" else []

    def _char(self, char: str, events: list[Event]) -> None:
        if self._mode == "text":
            self.text.append(char)
            events.append(TextPiece(char))
        elif self._mode == "calls" and self._in_call:
            self._call_char(char, events)
        else:
            self._tag_char(char, events)

    def _tag_char(self, char: str, events: list[Event]) -> None:
        """Outside a call: the opening tag of the next call (or the closing tag of the last one)."""
        if not self._held and char.isspace() and self._mode == "calls":
            return
        self._held += char
        if OPEN.startswith(self._held):
            if self._held == OPEN:
                self._held = ""
                self._open_call()
            return
        if self._mode == "start":  # not a call: the whole answer is text
            self._mode, self.complete, held, self._held = "text", True, self._held, ""
            self.text.append(held)
            events.append(TextPiece(held))
        elif not CLOSE.startswith(self._held) or self._held == CLOSE:
            self._held = ""  # a closing tag (or what the grammar never writes) between calls

    def _open_call(self) -> None:
        if self._mode == "start":
            self._mode = "calls"
            self._inner.feed(CALLS_PREFIX)
        elif self._calls:
            self._inner.feed(",")
        self._in_call, self.complete = True, False

    def _call_char(self, char: str, events: list[Event]) -> None:
        inner = self._inner
        if inner.depth == CALL_DEPTH and char != "{":
            return  # the line break before the call's JSON
        events += inner.feed(char)
        if inner.depth == CALL_DEPTH:  # the call's object closed
            self._in_call, self.complete = False, True
            self._calls += 1
