"""Read a tool-enabled answer while it is generated: which branch, the calls' names, the argument
text and the text answer, piece by piece.

The answer is one JSON object generated under the grammar of serve_app/tool_calls.py, so its shape
is known: `{"tool_call": {"name", "arguments"}}`, `{"tool_calls": [{"name", "arguments"}, ...]}`
or `{"response": "..."}` (a JSON value instead of a string when a response_format asks for one).
A JSON scanner that tracks strings, escapes and nesting is then enough to find where the name ends
and where the arguments start and stop, whatever the split of the text into pieces. The same
scanner reads a whole answer (`read_answer`), so a streamed answer's fragments joined equal the
answer read at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class TextPiece:
    """Part of the text answer (`response`): a string's decoded characters, or a JSON value's text."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A call's name is complete."""

    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsPiece:
    """Part of a call's arguments, as the model wrote them (JSON text)."""

    index: int
    text: str


Event = Union[TextPiece, CallStart, ArgumentsPiece]


@dataclass
class _Frame:
    array: bool
    key: Optional[str] = None  # an object's current key
    index: int = 0  # an array's current item
    wants_key: bool = True  # an object: the next string is a key

    def step(self) -> Union[str, int, None]:
        return self.index if self.array else self.key


@dataclass
class ScannedCall:
    name: str = ""
    arguments: str = ""


@dataclass
class AnswerScanner:
    """Feed it the answer's text in any pieces; it returns what each piece completes."""

    calls: list = field(default_factory=list)  # ScannedCall per call seen, in order
    text: list = field(default_factory=list)  # the text answer's pieces
    complete: bool = False  # the top-level object has closed
    _stack: list = field(default_factory=list)
    _in_string: bool = False
    _string: list = field(default_factory=list)  # a key's or a name's characters
    _string_target: Optional[str] = None  # "key", "name", "text" or None (a value nobody reads)
    _escape: Optional[str] = None  # after a backslash: "" then the \u digits read so far
    _high: Optional[str] = None  # a high surrogate waiting for its low half
    _capture: Optional[tuple] = None  # ("text", depth) or ("arguments", depth, index): a value's raw text

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        for char in text:
            self._char(char, events)
        return merged(events)

    @property
    def depth(self) -> int:
        """How many objects and arrays are open."""
        return len(self._stack)

    def finish(self) -> list[Event]:
        """What the end of the text releases: a lone high surrogate of a cut answer."""
        events: list[Event] = []
        self._flush_surrogate(events)
        return events

    # the path of the value that starts now, e.g. ("tool_calls", 1, "arguments")
    def _path(self) -> tuple:
        return tuple(frame.step() for frame in self._stack)

    @staticmethod
    def _call_index(path: tuple) -> Optional[int]:
        """The call whose object sits at `path`: ("tool_call",) or ("tool_calls", i)."""
        if path == ("tool_call",):
            return 0
        if len(path) == 2 and path[0] == "tool_calls" and isinstance(path[1], int):
            return path[1]
        return None

    def _call(self, index: int) -> ScannedCall:
        while len(self.calls) <= index:
            self.calls.append(ScannedCall())
        return self.calls[index]

    def _emit_raw(self, char: str, events: list[Event]) -> None:
        if self._capture is None:
            return
        if self._capture[0] == "text":
            self.text.append(char)
            events.append(TextPiece(char))
        else:
            index = self._capture[2]
            self._call(index).arguments += char
            events.append(ArgumentsPiece(index, char))

    def _char(self, char: str, events: list[Event]) -> None:
        if self._in_string:
            self._emit_raw(char, events)  # a captured value's strings go out as written
            return self._string_char(char, events)
        if self.complete:
            return
        if char in "{[":
            if self._capture is None:
                self._value_starts()
            self._emit_raw(char, events)
            self._stack.append(_Frame(array=char == "["))
            return
        if char in "}]":
            self._emit_raw(char, events)
            self._stack.pop()
            if self._capture is not None and len(self._stack) < self._capture[1]:
                self._capture = None
            self.complete = not self._stack
            return
        if not self._stack:
            return  # before the object: nothing the grammar lets matter
        self._emit_raw(char, events)  # inside a captured value everything is its text
        top = self._stack[-1]
        if char == ":":
            top.wants_key = False
        elif char == ",":
            if top.array:
                top.index += 1
            else:
                top.wants_key = True
        elif char == '"':
            self._string_starts(top)

    def _value_starts(self) -> None:
        """A container opens outside any capture: is it a value someone reads?"""
        path = self._path()
        index = self._call_index(path[:-1]) if path and path[-1] == "arguments" else None
        if path == ("response",):
            self._capture = ("text", len(self._stack) + 1)
        elif index is not None:
            self._call(index)
            self._capture = ("arguments", len(self._stack) + 1, index)

    def _string_starts(self, top: _Frame) -> None:
        self._in_string, self._string = True, []
        if self._capture is not None:
            self._string_target = None
        elif not top.array and top.wants_key:
            self._string_target = "key"
        else:
            path = self._path()
            if path == ("response",):
                self._string_target = "text"
            elif path and path[-1] == "name" and self._call_index(path[:-1]) is not None:
                self._string_target = "name"
            else:
                self._string_target = None

    def _string_char(self, char: str, events: list[Event]) -> None:
        if self._escape is not None:
            return self._escaped(char, events)
        if char == "\\":
            self._escape = ""
        elif char == '"':
            self._string_ends(events)
        else:
            self._decoded(char, events)

    def _escaped(self, char: str, events: list[Event]) -> None:
        if self._escape == "" and char != "u":
            self._escape = None
            return self._decoded(ESCAPES.get(char, char), events)
        if self._escape == "":
            self._escape = "u"
            return
        self._escape += char
        if len(self._escape) < 5:
            return
        code, self._escape = int(self._escape[1:], 16), None
        if 0xD800 <= code < 0xDC00:  # the first half of a pair: wait for the second
            self._flush_surrogate(events)
            self._high = chr(code)
        elif 0xDC00 <= code < 0xE000 and self._high is not None:
            pair = 0x10000 + ((ord(self._high) - 0xD800) << 10) + (code - 0xDC00)
            self._high = None
            self._decoded(chr(pair), events)
        else:
            self._decoded(chr(code) if not 0xDC00 <= code < 0xE000 else "\ufffd", events)

    def _flush_surrogate(self, events: list[Event]) -> None:
        """A high surrogate without its low half cannot be sent as UTF-8: U+FFFD stands for it."""
        if self._high is not None:
            self._high = None
            self._decoded("\ufffd", events, flushing=True)

    def _decoded(self, char: str, events: list[Event], flushing: bool = False) -> None:
        if not flushing:
            self._flush_surrogate(events)
        if self._string_target == "text":
            self.text.append(char)
            events.append(TextPiece(char))
        elif self._string_target is not None:
            self._string.append(char)

    def _string_ends(self, events: list[Event]) -> None:
        self._flush_surrogate(events)
        self._in_string = False
        value, target = "".join(self._string), self._string_target
        top = self._stack[-1]
        if target == "key":
            top.key = value
        elif target == "name":
            index = self._call_index(self._path()[:-1])
            self._call(index).name = value
            events.append(CallStart(index, value))


def merged(events: list[Event]) -> list[Event]:
    """Neighbouring pieces of the same kind joined (one event per character otherwise)."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextPiece) and isinstance(last, TextPiece):
            out[-1] = TextPiece(last.text + event.text)
        elif isinstance(event, ArgumentsPiece) and isinstance(last, ArgumentsPiece) and last.index == event.index:
            out[-1] = ArgumentsPiece(event.index, last.text + event.text)
        else:
            out.append(event)
    return out
