"""The bot's chat logic and its access rules over a stand-in generation service (logic only: the real
models, Serve app and Redis are in tests/integration/clients/test_telegram_webhook.py)."""

import asyncio
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from core.settings import Settings
from core.types import Usage
from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.pipeline import Pipeline
from serve_app.protocol.keys import KeyCreate, KeyUpdate
from serve_app.protocol.telegram import TgUpdate
from serve_app.state.chat_history import ChatHistory
from serve_app.state.store import MemoryStore
from serve_app.telegram.access import NOT_HERE, UNAVAILABLE, TelegramAccess
from serve_app.telegram.bot import MORE_HINT, TELEGRAM_LIMIT, TelegramBot, utf16_len, within_limit

ADMIN = "telegram-unit-admin-0123"


class FakeService:
    """Records the messages each generation got; answers with a fixed text."""

    def __init__(self, answer: str):
        self.answer = answer
        self.calls = []
        self.router = SimpleNamespace(entries={"m1": None, "m2": None}, default_model="m1")

    async def start(self, admission, model, request_id, sampling, *, prompt=None, messages=None):
        await admission.limit(model, sampling.max_tokens or 1)  # as GenerationService does: model, RPM, TPM
        self.calls.append(SimpleNamespace(model=model, messages=messages, key_id=admission.key_id))
        result = SimpleNamespace(text=self.answer, usage=Usage(5, 3))

        async def collect():
            admission.charge(result.usage.prompt_tokens, result.usage.completion_tokens)
            return result

        return SimpleNamespace(collect=collect)


class Harness:
    """A bot over one in-process store, its key a managed key made with `key_fields`."""

    def __init__(self, answer: str = "an answer", key_fields: dict | None = None, **settings):
        self.store = MemoryStore()
        self.keys = KeyService(self.store, {"m1", "m2"})
        created = asyncio.run(self.keys.create(KeyCreate(name="telegram-bot", **(key_fields or {}))))
        self.key_id = created.id
        self.settings = Settings(api_keys=ADMIN, telegram_api_key=created.key, telegram_webhook_secret="s",
                                 telegram_models="m1,m2", **settings)
        self.service = FakeService(answer)
        auth = Authenticator([ADMIN], "X-API-Key", self.keys, self.store, "closed")
        access = TelegramAccess(self.settings, Pipeline(auth, RateLimiter(self.store, 0, 0), self.keys), self.store)
        self.bot = TelegramBot(self.settings, self.service, access, ChatHistory(self.store))
        self.updates = iter(range(1, 10000))

    def say(self, text: str, chat_id: int = 7):
        update = TgUpdate.model_validate({"update_id": next(self.updates), "message": {
            "message_id": 1, "date": 0, "chat": {"id": chat_id, "type": "private"}, "text": text}})
        reply = asyncio.run(self.bot.handle(update))
        return reply.text if reply else None

    def update_key(self, **fields):
        asyncio.run(self.keys.update(self.key_id, KeyUpdate(**fields)))


def test_history_is_sent_and_reset_clears_it():
    h = Harness()
    h.say("one")
    h.say("two")
    assert [m["content"] for m in h.service.calls[-1].messages] == ["one", "an answer", "two"]
    assert h.service.calls[-1].key_id == h.key_id
    assert h.say("/reset") == "Conversation cleared."
    h.say("three")
    assert [m["content"] for m in h.service.calls[-1].messages] == ["three"]
    h.say("other chat", chat_id=8)
    assert [m["content"] for m in h.service.calls[-1].messages] == ["other chat"]


def test_model_choice_is_per_chat():
    h = Harness("ok")
    assert h.say("/model m2") == "Model set to m2."
    h.say("hi")
    assert h.service.calls[-1].model == "m2"
    h.say("hi", chat_id=9)
    assert h.service.calls[-1].model == "m1"


def test_a_6000_character_answer_is_split_and_the_rest_follows_on_more():
    answer = ("word " * 1200).strip()  # 5999 characters
    h = Harness(answer)
    first = h.say("write a lot")
    assert len(first) <= TELEGRAM_LIMIT and first.endswith(MORE_HINT)
    second = h.say("/more")
    assert not second.endswith(MORE_HINT)
    assert first[: -len(MORE_HINT)] + second == answer
    assert h.say("/more") == "Nothing more to send."


@pytest.mark.parametrize("text", ["/model " + "x" * 4000, "/model " + "a\n" * 2000, "/model " + "\U0001F600" * 2040,
                                  "/" + "a" * 4000])
def test_commands_with_long_arguments_answer_within_telegrams_limit(text):
    """A 4,000-character /model argument answered 500 (the reply repeated it past 4096 characters)."""
    h = Harness(telegram_bot_username="")
    reply = h.say(text)
    assert reply and utf16_len(reply) <= TELEGRAM_LIMIT
    assert h.say("/model") == "Current model: m1. Available: m1, m2."  # nothing was chosen


def test_any_reply_is_cut_to_telegrams_limit_in_utf16_units():
    assert within_limit("short") == "short"
    for text in ("a" * 5000, "\U0001F600" * 3000, "a" + "\U0001F600" * 2048):
        cut = within_limit(text)
        assert utf16_len(cut) <= TELEGRAM_LIMIT and cut.endswith("\u2026") and text.startswith(cut[:-1])


def test_a_bootstrap_key_is_refused_at_startup_unless_allowed():
    with pytest.raises(ValidationError, match="TELEGRAM_API_KEY is one of API_KEYS"):
        Settings(api_keys=ADMIN, telegram_api_key=ADMIN)
    assert Settings(api_keys=ADMIN, telegram_api_key=ADMIN, telegram_allow_bootstrap_key=True).telegram_api_key
    with pytest.raises(ValidationError, match="(?i)telegram_allowed_chats"):
        Settings(telegram_allowed_chats="42,general")


def test_only_allowed_chats_are_answered_and_politely():
    h = Harness(telegram_allowed_chats="7, -1001234567890")
    assert h.say("hi") == "an answer"
    assert h.say("hi", chat_id=-1001234567890) == "an answer"
    assert h.say("hi", chat_id=8) == NOT_HERE
    assert h.say("/model m2", chat_id=8) == NOT_HERE  # commands too
    assert len(h.service.calls) == 2


def test_each_chat_has_its_own_requests_per_minute():
    h = Harness(telegram_chat_rpm=2)
    assert [h.say(f"q{i}") for i in range(2)] == ["an answer"] * 2
    refused = h.say("q3")
    assert refused.startswith("You are sending messages faster than I can answer. Please wait ")
    assert h.say("/help").startswith("Hello!")  # commands use no model: not counted
    assert h.say("q1", chat_id=8) == "an answer"  # another chat has its own window
    assert len(h.service.calls) == 3


def test_the_keys_state_scopes_models_and_limits_apply():
    h = Harness()
    h.update_key(enabled=False)
    assert h.say("hi") == UNAVAILABLE and h.say("/help") == UNAVAILABLE
    h.update_key(enabled=True, scopes=["inference", "admin"])
    assert h.say("hi") == UNAVAILABLE  # an admin key is refused: the bot needs an inference-only key
    h.update_key(scopes=["metrics"])
    assert h.say("hi") == UNAVAILABLE
    h.update_key(scopes=["inference"], models=["m2"])
    assert h.say("/model") == "Current model: m2. Available: m2."
    assert h.say("/model m1").startswith("Unknown model 'm1'")
    assert h.say("hi") == "an answer" and h.service.calls[-1].model == "m2"
    h.update_key(models=None, rate_limit_per_minute=1)
    assert h.say("hi", chat_id=8) == "an answer"
    assert h.say("hi", chat_id=9).startswith("I am answering too many people right now. Please try again in ")
    assert len(h.service.calls) == 2


def test_answers_are_charged_to_the_bots_key():
    h = Harness()
    h.say("hi")
    h.say("again")
    usage = asyncio.run(h.keys.usage(h.key_id))
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (2, 10, 6)


def test_a_revoked_key_stops_the_bot_at_the_next_update():
    h = Harness()
    assert h.say("hi") == "an answer"
    asyncio.run(h.keys.revoke(h.key_id))
    assert h.say("hi") == UNAVAILABLE and len(h.service.calls) == 1
