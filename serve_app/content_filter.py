"""Content policy: deny-listed terms and regular expressions, for prompts and (optionally) outputs.

Terms match as whole words, case-insensitively; patterns are Python regular expressions
(matched case-insensitively). A match answers 400 with type `content_filter`; a streamed
output that matches ends with an error event instead of the offending text.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Optional

from serve_app.access_errors import ContentFiltered


def _compile(terms: Iterable[str], patterns: Iterable[str]) -> Optional[re.Pattern]:
    parts = [rf"(?<!\w){re.escape(t)}(?!\w)" for t in terms] + [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _terms(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


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
    def __init__(self, prompt: Optional[re.Pattern], output: Optional[re.Pattern]):
        self.prompt = prompt
        self.output = output

    @classmethod
    def from_settings(cls, settings) -> "ContentPolicy":
        return cls(
            _compile(_terms(settings.content_filter_terms),
                     _patterns(settings.content_filter_patterns, "CONTENT_FILTER_PATTERNS")),
            _compile(_terms(settings.content_filter_output_terms),
                     _patterns(settings.content_filter_output_patterns, "CONTENT_FILTER_OUTPUT_PATTERNS")),
        )

    def check_prompt(self, texts: Iterable[str], param: str) -> None:
        if self.prompt is None:
            return
        for text in texts:
            if self.prompt.search(text):
                raise ContentFiltered("the request was refused by the content policy", param=param)

    def output_screen(self) -> Optional["OutputScreen"]:
        return OutputScreen(self.output) if self.output is not None else None


class OutputScreen:
    """Checks generated text as it accumulates, so a term split across chunks is still caught."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern
        self.text = ""

    def __call__(self, piece: str) -> None:
        self.text += piece
        if piece and self.pattern.search(self.text):
            raise ContentFiltered("the response was withheld by the content policy", code="content_filter")
