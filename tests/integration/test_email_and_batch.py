"""POST /api/v1/generate/batch and "format": "email" on single and batch requests."""

import html

from serve_app.email_format import BODY_CLOSE, BODY_OPEN, QUOTE_CLOSE, QUOTE_OPEN
from tests.integration.conftest import BATCH_MAX_ITEMS, DEFAULT, GEMMA

INCOMING = {
    "subject": "Re: Opening hours <urgent>",
    "sender": "Mallory <mallory@example.com>",
    "original": "Hi,\nare you open on Sunday? <script>alert('x')</script>\nThanks",
}


def _section(text: str, start: str, end: str) -> str:
    at = text.index(start) + len(start)
    return text[at:text.index(end, at)]


def _check_email(reply: dict, answer: str, quoted: bool):
    email = reply["email"]
    assert email["subject"] == "Re: Opening hours <urgent>"
    # the HTML body is exactly the escaped plain-text body: nothing the model wrote is markup
    assert _section(email["html"], BODY_OPEN, BODY_CLOSE) == html.escape(answer.strip())
    assert email["text"].startswith(answer.strip())
    if quoted:
        quote = email["text"][len(answer.strip()) + 2:]
        assert quote.startswith("Mallory <mallory@example.com> wrote:\n> Hi,")
        assert _section(email["html"], QUOTE_OPEN, QUOTE_CLOSE) == html.escape(quote)
    assert "<script>" not in email["html"]


def test_single_chat_and_generate_with_email_format(client):
    body = {"messages": [{"role": "system", "content": "You answer customer emails politely."},
                         {"role": "user", "content": INCOMING["original"]}],
            "max_tokens": 40, "format": "email", "email": {**INCOMING, "quote_original": True}}
    r = client.post("/api/v1/chat", json=body)
    assert r.status_code == 200, r.text
    _check_email(r.json(), r.json()["response"], quoted=True)

    r = client.post("/api/v1/generate", json={"prompt": "Dear customer,", "max_tokens": 20, "format": "email",
                                              "email": {"subject": INCOMING["subject"]}})
    assert r.status_code == 200, r.text
    _check_email(r.json(), r.json()["response"], quoted=False)
    assert "email" not in client.post("/api/v1/generate", json={"prompt": "Hi", "max_tokens": 2}).json()


def test_email_format_mistakes_are_400(client):
    stream = client.post("/api/v1/generate", json={"prompt": "Hi", "format": "email", "stream": True})
    assert stream.status_code == 400 and stream.json()["error"]["type"] == "invalid_request_error"
    no_original = client.post("/api/v1/generate", json={"prompt": "Hi", "format": "email",
                                                        "email": {"quote_original": True}})
    assert no_original.status_code == 400
    assert client.post("/api/v1/generate", json={"prompt": "Hi", "format": "pdf"}).status_code == 400


def test_batch_runs_items_in_order_and_one_bad_item_does_not_fail_it(client):
    items = [
        {"id": "mail-1", "messages": [{"role": "user", "content": INCOMING["original"]}], "max_tokens": 12,
         "email": {**INCOMING, "quote_original": True}},
        {"id": "bad", "prompt": "Hello", "temperature": 7},
        {"id": "gen", "type": "generate", "model": GEMMA, "prompt": "Dear Sir,", "max_tokens": 6, "ignore_eos": True,
         "format": "text"},
        {"id": "ghost", "model": "no-such-model", "prompt": "Hi"},
    ]
    r = client.post("/api/v1/generate/batch", json={"items": items, "format": "email"})
    assert r.status_code == 200, r.text
    results, totals = r.json()["results"], r.json()["totals"]
    assert [x["id"] for x in results] == ["mail-1", "bad", "gen", "ghost"]
    assert [x["index"] for x in results] == [0, 1, 2, 3]
    assert [x["status"] for x in results] == ["ok", "error", "ok", "error"]
    assert results[1]["error"]["param"] == "temperature" and results[1]["error"]["type"] == "invalid_request_error"
    assert results[3]["error"]["code"] == "model_not_found"
    mail = results[0]["result"]
    assert mail["model"] == DEFAULT
    _check_email(mail, mail["response"], quoted=True)
    assert results[2]["result"]["model"] == GEMMA and "email" not in results[2]["result"]
    assert totals["items"] == 4 and totals["succeeded"] == 2 and totals["failed"] == 2
    assert totals["tokens_used"] == mail["tokens_used"] + results[2]["result"]["tokens_used"]


def test_batch_limits(client):
    too_many = [{"id": str(i), "prompt": "Hi", "max_tokens": 1} for i in range(BATCH_MAX_ITEMS + 1)]
    r = client.post("/api/v1/generate/batch", json={"items": too_many})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_items"
    assert client.post("/api/v1/generate/batch", json={"items": []}).status_code == 400
    r = client.post("/api/v1/generate/batch", json={"items": [
        {"id": "same", "prompt": "Hi", "max_tokens": 1}, {"id": "same", "prompt": "Hi", "max_tokens": 1},
        {"prompt": "no id"}, {"id": "s", "prompt": "Hi", "stream": True}]})
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["ok", "error", "error", "error"]
    assert r.json()["results"][1]["error"]["param"] == "id"
    assert r.json()["results"][2]["error"]["param"] == "id"
