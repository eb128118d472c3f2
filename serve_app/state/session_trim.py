"""Which earlier messages of a conversation go to the model: trimmed in blocks, counted without the model.

The engine reuses a conversation's cached KV only while the start of the prompt stays the same.
Dropping the oldest turn every turn once the context is full would change that start every turn,
and every turn would prefill the whole history again. So a trim drops a block at once (about
half the room left for the history), whole turns at a time, and the next several turns only
append. The same holds for the Telegram window (`block_window`), which counts messages.

Token counts come from the model's own usage of the previous turns (`attribute`), never from a
call to the model before a turn: a message not yet counted gets an upper bound (its UTF-8 bytes).
"""

from __future__ import annotations

import json
from typing import Optional

from core.token_bounds import MESSAGE_TOKENS, text_token_bound

# An answer's role markers in the next prompt (the answer's own tokens are its completion tokens).
# An error here is absorbed by the next user message's count (`attribute`), so it never accumulates.
ANSWER_MARKERS = 5


def estimate(message: dict) -> int:
    """At least the tokens `message` takes in a prompt (its bytes and role markers)."""
    calls = message.get("tool_calls")  # an assistant's calls: their JSON is in the prompt too
    return text_token_bound((message.get("content") or "") + (json.dumps(calls) if calls else "")) + MESSAGE_TOKENS


def stored_counts(record: Optional[dict]) -> list[int]:
    """The per-message token counts of a stored session; estimates where a record has none
    (one saved before counts were kept, or imported)."""
    if not record:
        return []
    messages, counts = record.get("messages") or [], record.get("tokens")
    if isinstance(counts, list) and len(counts) == len(messages) and all(isinstance(c, int) for c in counts):
        return list(counts)
    return [estimate(m) for m in messages]


def trim_to_fit(messages: list[dict], counts: list[int], budget: int,
                max_messages: Optional[int] = None) -> list[int]:
    """Indices of the messages to send: all of them while they fit `budget` tokens (and
    `max_messages`); else the oldest turns are dropped down to about half the room that the
    system messages and the newest message leave, and whole turns only (what is kept starts
    with a user message); if even that is over the budget, the older system messages but the
    last go too. The newest message always stays (if it alone does not fit, the model says so).
    """
    last = len(messages) - 1
    total = sum(counts)
    if last < 0 or (total <= budget and (max_messages is None or len(messages) <= max_messages)):
        return list(range(len(messages)))
    systems = [i for i in range(last) if messages[i]["role"] == "system"]
    turns = [i for i in range(last) if messages[i]["role"] != "system"]
    history = sum(counts[i] for i in turns)
    fixed = total - history
    # Half the room each limit that is exceeded leaves to the history; a limit that holds binds nothing.
    token_target = (budget - fixed) // 2 if total > budget else history
    over_count = max_messages is not None and len(messages) > max_messages
    count_target = (max_messages - len(systems) - 1) // 2 if over_count else len(turns)
    dropped: set[int] = set()
    left = len(turns)
    for i in turns:
        if history <= token_target and left <= count_target and messages[i]["role"] == "user":
            break
        dropped.add(i)
        history -= counts[i]
        left -= 1
    total = fixed + history
    kept_count = len(messages) - len(dropped)
    for i in systems[:-1]:
        if total <= budget and (max_messages is None or kept_count <= max_messages):
            break
        dropped.add(i)
        total -= counts[i]
        kept_count -= 1
    return [i for i in range(len(messages)) if i not in dropped]


def attribute(prompt_tokens: int, kept_tokens: int, new: list[dict], estimates: list[int]) -> list[int]:
    """The new messages' token counts: what the model counted for the whole prompt, less the kept
    history's counts, shared by size. The template's own tokens land here too, so the counts of a
    conversation add up to its last prompt."""
    if not new:
        return []
    if prompt_tokens <= 0:  # the engine reported no usage: keep the upper bounds
        return list(estimates)
    share = max(prompt_tokens - kept_tokens, len(new))
    sizes = [max(1, text_token_bound(m.get("content") or "")) for m in new]
    counts = [max(1, share * size // sum(sizes)) for size in sizes]
    counts[-1] = max(1, counts[-1] + share - sum(counts))
    return counts


def answer_tokens(completion_tokens: int, text: str) -> int:
    """The tokens an answer takes in the next turn's prompt."""
    if completion_tokens <= 0:
        return estimate({"content": text})
    return completion_tokens + ANSWER_MARKERS


def block_window(messages: list[dict], limit: int) -> list[dict]:
    """At most `limit` messages, cut in blocks: when over, the newest half is kept (from a user
    message on), so the window's start then stays put for several turns."""
    if len(messages) <= limit:
        return list(messages)
    start = len(messages) - max(1, limit // 2)
    while start < len(messages) - 1 and messages[start]["role"] != "user":
        start += 1
    return list(messages[start:])
