"""POST /api/v1/webhooks/telegram with Update payloads shaped as the Bot API sends them."""

import itertools

import httpx
import pytest

from tests.integration.conftest import DEFAULT, GEMMA, TELEGRAM_BOT, TELEGRAM_SECRET

PATH = "/api/v1/webhooks/telegram"
_update_ids = itertools.count(700000001)
_message_ids = itertools.count(1)

USER = {"id": 111222333, "is_bot": False, "first_name": "Ada", "username": "ada", "language_code": "en"}
PRIVATE = {"id": 111222333, "first_name": "Ada", "username": "ada", "type": "private"}
GROUP = {"id": -1001234567890, "title": "AI Core testers", "type": "supergroup"}
CHANNEL = {"id": -1009876543210, "title": "AI Core news", "username": "aicore_news", "type": "channel"}


def _message(chat: dict, **fields) -> dict:
    base = {"message_id": next(_message_ids), "date": 1764200000, "chat": chat}
    if chat["type"] != "channel":
        base["from"] = USER
    return {**base, **fields}


def _update(kind: str = "message", **message) -> dict:
    return {"update_id": next(_update_ids), kind: message}


def _text(chat: dict, text: str, kind: str = "message") -> dict:
    entities = []
    if text.startswith("/"):
        entities = [{"offset": 0, "length": len(text.split(" ")[0]), "type": "bot_command"}]
    return _update(kind, **_message(chat, text=text, entities=entities))


def _post(base_url: str, update: dict, secret=TELEGRAM_SECRET) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return httpx.post(base_url + PATH, json=update, headers=headers, timeout=300)


def _reply(base_url: str, update: dict) -> dict:
    r = _post(base_url, update)
    assert r.status_code == 200, r.text
    return r.json()


def test_secret_missing_or_wrong(base_url):
    update = _text(PRIVATE, "hello")
    missing = _post(base_url, update, secret=None)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = _post(base_url, update, secret="not-the-secret")
    assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "permission_error"
    garbage = httpx.post(base_url + PATH, content=b"{nope", headers={"X-Telegram-Bot-Api-Secret-Token": "x"})
    assert garbage.status_code == 403  # the secret is checked before the body is read
    malformed = httpx.post(base_url + PATH, content=b"{nope", headers={
        "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"


def test_private_text_is_answered_with_send_message_and_a_repeat_is_ignored(base_url):
    update = _text(PRIVATE, "Hello! Who are you?")
    reply = _reply(base_url, update)
    assert reply["method"] == "sendMessage"
    assert reply["chat_id"] == PRIVATE["id"]
    assert 0 < len(reply["text"]) <= 4096
    assert "reply_parameters" not in reply
    for _ in range(3):  # Telegram redelivers; every ingress replica must know it was handled
        assert _reply(base_url, update) == {}


@pytest.mark.parametrize("kind, chat", [("edited_message", PRIVATE), ("channel_post", CHANNEL)])
def test_edited_messages_and_channel_posts_are_answered(base_url, kind, chat):
    reply = _reply(base_url, _text(chat, "What is two plus two?", kind=kind))
    assert reply["method"] == "sendMessage" and reply["chat_id"] == chat["id"] and reply["text"]


def test_caption_is_used_and_updates_without_text_get_no_action(base_url):
    photo = [{"file_id": "AgAC-small", "file_unique_id": "AQAD1", "width": 90, "height": 60, "file_size": 1200}]
    captioned = _update(**_message(PRIVATE, photo=photo, caption="Describe a sunset in one line."))
    reply = _reply(base_url, captioned)
    assert reply["method"] == "sendMessage" and reply["text"]
    assert _reply(base_url, _update(**_message(PRIVATE, photo=photo))) == {}
    sticker = {"file_id": "CAAC-st", "file_unique_id": "AgAD2", "type": "regular", "width": 512, "height": 512,
               "is_animated": False, "is_video": False, "emoji": "\U0001F44D"}
    assert _reply(base_url, _update(**_message(GROUP, sticker=sticker))) == {}
    member = {"update_id": next(_update_ids), "my_chat_member": {"chat": GROUP, "from": USER, "date": 1764200000}}
    assert _reply(base_url, member) == {}


def test_group_commands_with_and_without_botname(base_url):
    reply = _reply(base_url, _text(GROUP, f"/start@{TELEGRAM_BOT}"))
    assert reply["chat_id"] == GROUP["id"] and "/reset" in reply["text"]
    assert reply["reply_parameters"]["message_id"] > 0  # answers the command's message in a group
    assert _reply(base_url, _text(GROUP, "/start@some_other_bot")) == {}
    assert "/model" in _reply(base_url, _text(GROUP, "/start"))["text"]


def test_model_and_reset_commands(base_url):
    chat = {"id": 555000111, "first_name": "Bo", "type": "private"}
    assert _reply(base_url, _text(chat, "/model"))["text"].startswith(f"Current model: {DEFAULT}.")
    assert _reply(base_url, _text(chat, "/model no-such-model"))["text"].startswith("Unknown model")
    assert _reply(base_url, _text(chat, f"/model@{TELEGRAM_BOT} {GEMMA}"))["text"] == f"Model set to {GEMMA}."
    assert _reply(base_url, _text(chat, "/model"))["text"].startswith(f"Current model: {GEMMA}.")
    assert _reply(base_url, _text(chat, "The capital of France is"))["text"]
    assert _reply(base_url, _text(chat, "/reset"))["text"] == "Conversation cleared."
    assert _reply(base_url, _text(chat, "/more"))["text"] == "Nothing more to send."
    # the model choice is per chat
    assert _reply(base_url, _text(PRIVATE, "/model"))["text"].startswith(f"Current model: {DEFAULT}.")
