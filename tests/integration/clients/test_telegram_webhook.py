"""POST /api/v1/webhooks/telegram with Update payloads shaped as the Bot API sends them, the bot
running under a managed key with per-chat limits, its chats in Redis."""

import asyncio
import itertools

import httpx
import pytest

from core.settings import Settings
from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.pipeline import Pipeline
from serve_app.protocol.telegram import TgUpdate
from serve_app.state.chat_history import ChatHistory
from serve_app.state.store import RedisStore
from serve_app.telegram.access import NOT_HERE, UNAVAILABLE, TelegramAccess
from serve_app.telegram.bot import TelegramBot
from tests.integration.clients.conftest import ADMIN_KEY, CHAT_RPM, STRANGER_ID
from tests.integration.conftest import DEFAULT, GEMMA, TELEGRAM_BOT, TELEGRAM_SECRET
from tests.unit.serve_app.telegram.test_telegram_bot import FakeService

PATH = "/api/v1/webhooks/telegram"
_update_ids = itertools.count(700000001)
_message_ids = itertools.count(1)

USER = {"id": 111222333, "is_bot": False, "first_name": "Ada", "username": "ada", "language_code": "en"}
PRIVATE = {"id": 111222333, "first_name": "Ada", "username": "ada", "type": "private"}
STRANGER = {"id": STRANGER_ID, "first_name": "Eve", "type": "private"}
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


def _post(url: str, update: dict, secret=TELEGRAM_SECRET) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return httpx.post(url + PATH, json=update, headers=headers, timeout=300)


def _reply(url: str, update: dict) -> dict:
    r = _post(url, update)
    assert r.status_code == 200, r.text
    return r.json()


def test_secret_missing_or_wrong(url):
    update = _text(PRIVATE, "hello")
    missing = _post(url, update, secret=None)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = _post(url, update, secret="not-the-secret")
    assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "permission_error"
    garbage = httpx.post(url + PATH, content=b"{nope", headers={"X-Telegram-Bot-Api-Secret-Token": "x"})
    assert garbage.status_code == 403  # the secret is checked before the body is read
    malformed = httpx.post(url + PATH, content=b"{nope", headers={
        "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"


def test_private_text_is_answered_with_send_message_and_a_repeat_is_ignored(url):
    update = _text(PRIVATE, "Hello! Who are you?")
    reply = _reply(url, update)
    assert reply["method"] == "sendMessage"
    assert reply["chat_id"] == PRIVATE["id"]
    assert 0 < len(reply["text"]) <= 4096
    assert "reply_parameters" not in reply
    for _ in range(3):  # Telegram redelivers; every ingress replica must know it was handled
        assert _reply(url, update) == {}


@pytest.mark.parametrize("kind, chat", [("edited_message", PRIVATE), ("channel_post", CHANNEL)])
def test_edited_messages_and_channel_posts_are_answered(url, kind, chat):
    reply = _reply(url, _text(chat, "What is two plus two?", kind=kind))
    assert reply["method"] == "sendMessage" and reply["chat_id"] == chat["id"] and reply["text"]


def test_caption_is_used_and_updates_without_text_get_no_action(url):
    photo = [{"file_id": "AgAC-small", "file_unique_id": "AQAD1", "width": 90, "height": 60, "file_size": 1200}]
    captioned = _update(**_message(PRIVATE, photo=photo, caption="Describe a sunset in one line."))
    reply = _reply(url, captioned)
    assert reply["method"] == "sendMessage" and reply["text"]
    assert _reply(url, _update(**_message(PRIVATE, photo=photo))) == {}
    sticker = {"file_id": "CAAC-st", "file_unique_id": "AgAD2", "type": "regular", "width": 512, "height": 512,
               "is_animated": False, "is_video": False, "emoji": "\U0001F44D"}
    assert _reply(url, _update(**_message(GROUP, sticker=sticker))) == {}
    member = {"update_id": next(_update_ids), "my_chat_member": {"chat": GROUP, "from": USER, "date": 1764200000}}
    assert _reply(url, member) == {}


def test_group_commands_with_and_without_botname(url):
    reply = _reply(url, _text(GROUP, f"/start@{TELEGRAM_BOT}"))
    assert reply["chat_id"] == GROUP["id"] and "/reset" in reply["text"]
    assert reply["reply_parameters"]["message_id"] > 0  # answers the command's message in a group
    assert _reply(url, _text(GROUP, "/start@some_other_bot")) == {}
    assert "/model" in _reply(url, _text(GROUP, "/start"))["text"]


def test_model_and_reset_commands(url):
    chat = {"id": 555000111, "first_name": "Bo", "type": "private"}
    assert _reply(url, _text(chat, "/model"))["text"].startswith(f"Current model: {DEFAULT}.")
    assert _reply(url, _text(chat, "/model no-such-model"))["text"].startswith("Unknown model")
    assert _reply(url, _text(chat, f"/model@{TELEGRAM_BOT} {GEMMA}"))["text"] == f"Model set to {GEMMA}."
    assert _reply(url, _text(chat, "/model"))["text"].startswith(f"Current model: {GEMMA}.")
    assert _reply(url, _text(chat, "The capital of France is"))["text"]
    assert _reply(url, _text(chat, "/reset"))["text"] == "Conversation cleared."
    assert _reply(url, _text(chat, "/more"))["text"] == "Nothing more to send."
    # the model choice is per chat
    assert _reply(url, _text(PRIVATE, "/model"))["text"].startswith(f"Current model: {DEFAULT}.")


def _chat(chat_id: int) -> dict:
    return {"id": chat_id, "first_name": "Cy", "type": "private"}


def _usage(url: str, key_id: str) -> dict:
    r = httpx.get(f"{url}/api/v1/keys/{key_id}/usage", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_chat_not_on_the_allowlist_is_told_so_and_costs_nothing(url, bot_key):
    before = _usage(url, bot_key.id)
    reply = _reply(url, _text(STRANGER, "Hello, anyone there?"))
    assert reply["chat_id"] == STRANGER_ID and reply["text"] == NOT_HERE  # HTTP 200: Telegram does not retry
    assert _reply(url, _text(STRANGER, "/start"))["text"] == NOT_HERE
    assert _usage(url, bot_key.id)["requests"] == before["requests"]


def test_a_chat_over_its_requests_per_minute_is_asked_to_wait(url):
    chat = _chat(555000222)
    answers = [_reply(url, _text(chat, f"Say the number {i}."))["text"] for i in range(CHAT_RPM + 1)]
    assert all(a and not a.startswith("You are sending") for a in answers[:CHAT_RPM]), answers
    assert answers[-1].startswith("You are sending messages faster than I can answer. Please wait "), answers[-1]
    assert _reply(url, _text(chat, "/help"))["text"].startswith("Hello!")  # commands stay answered


def test_the_bots_key_is_checked_like_any_clients_key(url, admin, bot_key):
    chat = _chat(555000333)
    path = f"/api/v1/keys/{bot_key.id}"
    try:
        assert admin.patch(path, json={"enabled": False}).status_code == 200
        assert _reply(url, _text(chat, "Hello"))["text"] == UNAVAILABLE
        assert admin.patch(path, json={"enabled": True, "scopes": ["inference", "admin"]}).status_code == 200
        assert _reply(url, _text(chat, "Hello"))["text"] == UNAVAILABLE  # an admin key is refused
        # its IP allowlist is checked against the webhook's caller (here 127.0.0.1)
        assert admin.patch(path, json={"scopes": ["inference"], "ip_allowlist": ["10.0.0.0/8"]}).status_code == 200
        assert _reply(url, _text(chat, "Hello"))["text"] == UNAVAILABLE
        assert admin.patch(path, json={"ip_allowlist": ["127.0.0.0/8"], "models": [DEFAULT]}).status_code == 200
        assert _reply(url, _text(chat, "/model"))["text"] == f"Current model: {DEFAULT}. Available: {DEFAULT}."
        assert _reply(url, _text(chat, f"/model {GEMMA}"))["text"].startswith("Unknown model")
        assert admin.patch(path, json={"models": [DEFAULT, GEMMA], "rate_limit_per_minute": 1}).status_code == 200
        first = _reply(url, _text(chat, "Name a colour."))["text"]
        assert first and not first.startswith("I am answering"), first
        assert _reply(url, _text(_chat(555000444), "Name a fruit."))["text"].startswith(
            "I am answering too many people right now. Please try again in ")  # the key's limit: every chat
    finally:
        restored = admin.patch(path, json={"enabled": True, "scopes": ["inference"], "models": [DEFAULT, GEMMA],
                                           "rate_limit_per_minute": 0, "ip_allowlist": []})
        assert restored.status_code == 200, restored.text


def test_answers_are_charged_to_the_bots_key(url, bot_key):
    before = _usage(url, bot_key.id)
    assert _reply(url, _text(_chat(555000444), "What is the capital of Italy?"))["text"]
    after = _usage(url, bot_key.id)
    assert after["requests"] == before["requests"] + 1
    assert after["prompt_tokens"] > before["prompt_tokens"] and after["completion_tokens"] > before["completion_tokens"]


def test_the_chat_lives_in_redis_and_a_fresh_bot_goes_on_with_it(url, redis_server, bot_key):
    chat = _chat(555000555)
    assert _reply(url, _text(chat, f"/model {GEMMA}"))["text"] == f"Model set to {GEMMA}."
    answer = _reply(url, _text(chat, "My name is Ada."))["text"]

    async def fresh_bot_turn():
        # What a restarted ingress has: nothing in memory, the same Redis.
        store = RedisStore(redis_server.url)
        stored = await ChatHistory(store).get(str(chat["id"]))
        assert stored.model == GEMMA
        assert stored.messages == [{"role": "user", "content": "My name is Ada."},
                                   {"role": "assistant", "content": answer}]
        settings = Settings(api_keys=ADMIN_KEY, telegram_api_key=bot_key.key, telegram_webhook_secret="x")
        keys = KeyService(store, [DEFAULT, GEMMA])
        auth = Authenticator([ADMIN_KEY], "X-API-Key", keys, store, "closed")
        access = TelegramAccess(settings, Pipeline(auth, RateLimiter(store, 0, 0), keys), store)
        service = FakeService("Nice to meet you, Ada.")
        service.router.entries, service.router.default_model = {DEFAULT: None, GEMMA: None}, DEFAULT
        bot = TelegramBot(settings, service, access, ChatHistory(store))
        await bot.handle(TgUpdate.model_validate(_text(chat, "What is my name?")))
        return service.calls[-1]

    call = asyncio.run(fresh_bot_turn())
    assert call.model == GEMMA and call.key_id == bot_key.id
    assert [m["content"] for m in call.messages] == ["My name is Ada.", answer, "What is my name?"]
    # the server's bot still knows the chat's model
    assert _reply(url, _text(chat, "/model"))["text"].startswith(f"Current model: {GEMMA}.")
