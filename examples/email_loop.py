#!/usr/bin/env python3
"""Email loop: answer every .eml in an inbox folder with one batch request, write replies to an outbox.

    AICORE_URL=http://127.0.0.1:8000 python3 examples/email_loop.py examples/inbox /tmp/outbox

Standard library only. A real bot would fetch mail with imaplib and send with smtplib; the
batch request and the reply assembly are the same.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

URL = os.environ.get("AICORE_URL", "http://127.0.0.1:8000")
KEY = os.environ["AICORE_KEY"]  # e.g. the key in API_KEYS
SYSTEM = "You are the support desk of a small shop. Answer the customer's email briefly and politely."


def read_mail(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        return BytesParser(policy=policy.default).parse(f)


def item_for(mail_id: str, mail: EmailMessage) -> dict:
    body = mail.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return {
        "id": mail_id,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        "max_tokens": 120,
        "email": {"subject": mail["subject"], "sender": mail["from"], "original": text, "quote_original": True},
    }


def call_batch(items: list[dict]) -> dict:
    request = urllib.request.Request(
        URL + "/api/v1/generate/batch",
        data=json.dumps({"items": items, "format": "email"}).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # the batch itself was refused (e.g. too many items)
        sys.exit(f"batch refused: {error.code} {error.read().decode()}")


def reply_to(original: EmailMessage, reply: dict) -> EmailMessage:
    message = EmailMessage()
    message["To"] = original["reply-to"] or original["from"]
    message["From"] = original["to"] or "support@example.com"
    message["Subject"] = reply["subject"]
    if original["message-id"]:
        message["In-Reply-To"] = original["message-id"]
        message["References"] = original["message-id"]
    message.set_content(reply["text"])
    message.add_alternative(reply["html"], subtype="html")
    return message


def main(inbox: Path, outbox: Path) -> None:
    mails = {path.stem: read_mail(path) for path in sorted(inbox.glob("*.eml"))}
    if not mails:
        sys.exit(f"no .eml files in {inbox}")
    outbox.mkdir(parents=True, exist_ok=True)
    result = call_batch([item_for(mail_id, mail) for mail_id, mail in mails.items()])
    for item in result["results"]:
        if item["status"] == "error":
            print(f"{item['id']}: not answered: {item['error']['message']}")
            continue
        out = outbox / f"{item['id']}.reply.eml"
        out.write_bytes(bytes(reply_to(mails[item["id"]], item["result"]["email"])))
        print(f"{item['id']}: {item['result']['email']['subject']!r} -> {out}")
    totals = result["totals"]
    print(f"{totals['succeeded']}/{totals['items']} answered, {totals['tokens_used']} tokens, "
          f"{totals['processing_time']}s")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
