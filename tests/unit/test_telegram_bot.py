"""The bot's chat logic over a fake generation service (the real one is in the integration tests)."""

import asyncio
from types import SimpleNamespace

from serve_app.auth import Authenticator
from serve_app.chat_history import InMemoryChatHistory
from serve_app.keys import KeyService
from serve_app.protocol.telegram import TgUpdate
from serve_app.settings import Settings
from serve_app.store import MemoryStore
from serve_app.telegram import MORE_HINT, TELEGRAM_LIMIT, TelegramBot
from tests.unit.admissions import pipeline


class FakeService:
    """Records the messages each generation got; answers with a fixed text."""

    def __init__(self, answer: str):
        self.answer = answer
        self.calls = []
        self.router = SimpleNamespace(entries={"m1": None, "m2": None}, default_model="m1")

    async def start(self, admission, model, request_id, sampling, *, prompt=None, messages=None):
        self.calls.append(SimpleNamespace(model=model, messages=messages, key_id=admission.key_id))
        answer = self.answer

        async def collect():
            return SimpleNamespace(text=answer)

        return SimpleNamespace(collect=collect)


def _bot(answer: str) -> tuple[TelegramBot, FakeService]:
    key = "telegram-unit-key-0123"
    settings = Settings(api_keys=key, telegram_api_key=key, telegram_webhook_secret="s", telegram_models="m1,m2")
    service = FakeService(answer)
    auth = Authenticator([key], "X-API-Key", KeyService(MemoryStore(), {}), MemoryStore(), "closed")
    return TelegramBot(settings, service, pipeline(auth=auth), InMemoryChatHistory()), service


_ids = iter(range(1, 10000))


def _say(bot: TelegramBot, text: str, chat_id: int = 7):
    update = TgUpdate.model_validate({"update_id": next(_ids), "message": {
        "message_id": 1, "date": 0, "chat": {"id": chat_id, "type": "private"}, "text": text}})
    reply = asyncio.run(bot.handle(update))
    return reply.text if reply else None


def test_history_is_sent_and_reset_clears_it():
    bot, service = _bot("an answer")
    _say(bot, "one")
    _say(bot, "two")
    assert [m["content"] for m in service.calls[-1].messages] == ["one", "an answer", "two"]
    assert service.calls[-1].key_id.startswith("boot-")
    assert _say(bot, "/reset") == "Conversation cleared."
    _say(bot, "three")
    assert [m["content"] for m in service.calls[-1].messages] == ["three"]
    _say(bot, "other chat", chat_id=8)
    assert [m["content"] for m in service.calls[-1].messages] == ["other chat"]


def test_model_choice_is_per_chat():
    bot, service = _bot("ok")
    assert _say(bot, "/model m2") == "Model set to m2."
    _say(bot, "hi")
    assert service.calls[-1].model == "m2"
    _say(bot, "hi", chat_id=9)
    assert service.calls[-1].model == "m1"


def test_a_6000_character_answer_is_split_and_the_rest_follows_on_more():
    answer = ("word " * 1200).strip()  # 5999 characters
    bot, _ = _bot(answer)
    first = _say(bot, "write a lot")
    assert len(first) <= TELEGRAM_LIMIT and first.endswith(MORE_HINT)
    second = _say(bot, "/more")
    assert not second.endswith(MORE_HINT)
    assert first[: -len(MORE_HINT)] + second == answer
    assert _say(bot, "/more") == "Nothing more to send."
