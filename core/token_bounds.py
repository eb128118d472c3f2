"""Token bounds that never fall short, for reserving a request's tokens before the model counts them."""

from __future__ import annotations

from typing import Iterable

# A request's tokens are reserved before the model counts them, from a bound that never falls
# short: every token of the shipped tokenizers (byte-level BPE, SentencePiece with byte
# fallback, WordPiece) covers at least one UTF-8 byte, and the chat template adds a few tokens
# per message and a default system prompt at most. Four characters a token undercounted digits
# and CJK four times over (a TPM limit then let four times its tokens through).
TEMPLATE_TOKENS = 64  # the template's own text and a default system prompt
MESSAGE_TOKENS = 8  # each message's role markers


def text_token_bound(text: str) -> int:
    """At least as many tokens as `text` alone makes (its UTF-8 bytes)."""
    return len(text.encode("utf-8", "surrogatepass"))


def token_bound(texts: Iterable[str]) -> int:
    """At least as many tokens as `texts` make with any shipped tokenizer and chat template."""
    count = total = 0
    for text in texts:
        count += 1
        total += text_token_bound(text)
    return total + TEMPLATE_TOKENS + MESSAGE_TOKENS * count if count else 0
