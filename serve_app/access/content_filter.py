"""Content policy: deny-listed terms and regular expressions, for prompts and (optionally) outputs.

Terms match as whole words, case-insensitively; patterns are Python regular expressions
(matched case-insensitively). A match answers 400 with type `content_filter`; a streamed
output that matches ends with an error event, and no part of the offending text is sent
(output is held back until it can be judged: see OutputScreen).
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Optional

from core.errors import ContentFiltered


def _compile(terms: Iterable[str], patterns: Iterable[str]) -> Optional[re.Pattern]:
    parts = [rf"(?<!\w){re.escape(t)}(?!\w)" for t in terms] + [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _patterns(value: str, name: str) -> list[str]:
    if not value.strip():
        return []
    try:
        patterns = json.loads(value)
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ValueError
        for pattern in patterns:
            re.compile(pattern)
    except (ValueError, re.error) as error:
        raise ValueError(f"{name} must be a JSON list of regular expressions ({error or 'not a list'})") from None
    return patterns


class ContentPolicy:
    def __init__(self, prompt: Optional[re.Pattern], output: Optional[re.Pattern], holdback: int = 0):
        self.prompt = prompt
        self.output = output
        self.holdback = holdback

    @classmethod
    def from_settings(cls, settings) -> "ContentPolicy":
        output_terms = settings.content_filter_output_terms
        output_patterns = _patterns(settings.content_filter_output_patterns, "CONTENT_FILTER_OUTPUT_PATTERNS")
        # Text goes out only once no deny-listed term could still begin in it: the longest term's
        # length; a pattern's matches have no fixed length, so CONTENT_FILTER_HOLDBACK_CHARS.
        holdback = max([len(t) for t in output_terms] + ([settings.content_filter_holdback_chars] if output_patterns
                                                          else []), default=0)
        return cls(
            _compile(settings.content_filter_terms,
                     _patterns(settings.content_filter_patterns, "CONTENT_FILTER_PATTERNS")),
            _compile(output_terms, output_patterns),
            holdback,
        )

    def check_prompt(self, texts: Iterable[str], param: str) -> None:
        if self.prompt is None:
            return
        for text in texts:
            if self.prompt.search(text):
                raise ContentFiltered("the request was refused by the content policy", param=param)

    def output_screen(self) -> Optional["OutputScreen"]:
        return OutputScreen(self.output, self.holdback) if self.output is not None else None


class OutputScreen:
    """Judges generated text before any of it is sent.

    `feed` takes each piece as it is generated and returns the part that may go out now: text is
    held back while a deny-listed match could still begin in it (the last `holdback` characters,
    and any match that touches the end of the text so far, since more text may complete or undo
    it: "zebra" then "s"). `finish` judges the whole text and returns the rest. A match raises
    ContentFiltered, and the text of the match has never been released.
    """

    def __init__(self, pattern: re.Pattern, holdback: int):
        self.pattern = pattern
        self.holdback = holdback
        self.text = ""
        self.sent = 0  # characters of `text` already released

    def feed(self, piece: str) -> str:
        self.text += piece
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        end = len(self.text)
        safe = end if final else end - self.holdback
        position = max(0, self.sent - self.holdback)  # earlier text was judged already
        while (match := self.pattern.search(self.text, position)) is not None:
            if final or match.end() < end:
                raise ContentFiltered("the response was withheld by the content policy", code="content_filter")
            safe = min(safe, match.start())  # undecided until more text (or the end) comes
            position = match.start() + 1
        if safe <= self.sent:
            return ""
        released, self.sent = self.text[self.sent:safe], safe
        return released
