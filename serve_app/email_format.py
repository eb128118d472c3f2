"""Turn model output into an email reply: subject, plain-text body, HTML body (no HTTP here).

Every character the model wrote, and every character of the quoted original, goes
through `html.escape` before it reaches the HTML body.
"""

from __future__ import annotations

import html
import re
from typing import Optional

from serve_app.protocol.email import EmailOptions, EmailReply

SUBJECT_MAX = 78
HTML_HEAD = "<!DOCTYPE html>\n<html><body>"
HTML_TAIL = "</body></html>"
BODY_OPEN, BODY_CLOSE = '<div style="white-space: pre-wrap">', "</div>"
QUOTE_OPEN, QUOTE_CLOSE = '<blockquote style="white-space: pre-wrap">', "</blockquote>"
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv)\s*:\s*", re.IGNORECASE)


def reply_subject(original: Optional[str], answer: str) -> str:
    """`Re: <original subject>` (one `Re:`), else the answer's first line, shortened."""
    if original and original.strip():
        subject = original.strip()
        while _REPLY_PREFIX.match(subject):
            subject = _REPLY_PREFIX.sub("", subject, count=1)
        return "Re: " + " ".join(subject.split())
    first = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= SUBJECT_MAX else first[: SUBJECT_MAX - 1].rstrip() + "…"


def quote(original: str, sender: Optional[str]) -> str:
    header = f"{sender} wrote:" if sender else "The original message:"
    lines = original.strip("\n").splitlines() or [""]
    return header + "\n" + "\n".join("> " + line if line else ">" for line in lines)


def escape_html(text: str) -> str:
    return html.escape(text, quote=True)


def to_email(answer: str, options: Optional[EmailOptions]) -> EmailReply:
    options = options or EmailOptions()
    body = answer.strip()
    text = body
    parts = [HTML_HEAD, BODY_OPEN, escape_html(body), BODY_CLOSE]
    if options.quote_original and options.original:
        quoted = quote(options.original, options.sender)
        text = body + "\n\n" + quoted
        parts += ["\n", QUOTE_OPEN, escape_html(quoted), QUOTE_CLOSE]
    parts.append(HTML_TAIL)
    return EmailReply(subject=reply_subject(options.subject, body), text=text, html="".join(parts))
