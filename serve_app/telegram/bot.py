"""The Telegram bot behind `POST /api/v1/webhooks/telegram` (no HTTP here).

An update is answered by returning a `sendMessage` method as the webhook's response, so no
outbound connection to Telegram is needed. Who is answered, under which key and limits, is
`serve_app.telegram.access`; a refused chat is told so politely (HTTP 200), never with an error
Telegram would retry. Chats live on the shared store (`serve_app.state.chat_history`). An answer
longer than Telegram's 4096 characters is split: the first part is the reply, the rest waits in
the chat's state and `/more` sends the next part. Updates the bot cannot use (no text, repeated update_id, a command for
another bot) get nothing back (HTTP 200 with `{}`), so Telegram does not retry them.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Optional

from core.errors import (
    AICoreError,
    AuthenticationFailed,
    NotEnabled,
    Overloaded,
    QuotaExceeded,
    RateLimited,
    WrongSecret,
)
from core.settings import Settings
from core.types import SamplingParams
from serve_app.access.auth import Principal
from serve_app.access.usage import duration_text
from serve_app.pipeline import Admission
from serve_app.protocol.telegram import TgMessage, TgReplyParameters, TgSendMessage, TgUpdate
from serve_app.serving import GenerationService
from serve_app.state.chat_history import ChatHistory
from serve_app.state.session_trim import block_window
from serve_app.telegram.access import UNAVAILABLE, ChatRefused, TelegramAccess

logger = logging.getLogger("aicore.telegram")

TELEGRAM_LIMIT = 4096  # characters of one message, counted in UTF-16 code units
MORE_HINT = "\n\n[/more]"
ECHO_CHARS = 64  # of a user's own text (a /model argument, a command name) repeated in a reply


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Parts of at most `limit` UTF-16 units, cut at a paragraph, line or word break when one
    lies in the part's second half; joined back (with the breaks) they give `text`."""
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        cut = _fit(rest, limit)
        window = rest[:cut]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at >= cut // 2:
                cut = at + len(sep)
                break
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


def within_limit(text: str, limit: int = TELEGRAM_LIMIT) -> str:
    """`text` cut to at most `limit` UTF-16 units (an ellipsis where it was cut)."""
    if utf16_len(text) <= limit:
        return text
    return text[:_fit(text, limit - 1)] + "\u2026"


def shortened(text: str) -> str:
    """A user's own text as a reply repeats it: its first ECHO_CHARS characters."""
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "\u2026"


def _fit(text: str, limit: int) -> int:
    """The longest prefix (in characters) within `limit` UTF-16 units."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            return i
    return len(text)


@dataclass(frozen=True)
class Chat:
    id: int
    client_ip: Optional[str] = None  # the webhook caller's address (the bot key's IP allowlist)

    @property
    def key(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class Command:
    name: str  # without the slash, lower case
    bot: Optional[str]  # the @botname it was addressed to, if any
    args: str


def parse_command(text: str) -> Optional[Command]:
    """`/model@my_bot gemma` -> Command("model", "my_bot", "gemma"); plain text -> None."""
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, args = text[1:].partition(" ")
    name, _, bot = head.partition("@")
    if not name or not name.replace("_", "").isalnum():
        return None
    return Command(name.lower(), bot or None, args.strip())


class TelegramBot:
    def __init__(self, settings: Settings, service: GenerationService, access: TelegramAccess, chats: ChatHistory):
        self.settings = settings
        self.service = service
        self.access = access
        self.chats = chats
        entries = service.router.entries
        models = [n for n, e in entries.items() if getattr(getattr(e, "config", None), "task", "generate") == "generate"]
        self.allowed = [m for m in settings.telegram_models if m in models] or models
        default = settings.telegram_model or service.router.default_model
        self.default_model = default if default in self.allowed else next(iter(self.allowed), None)

    def check_secret(self, presented: Optional[str]) -> None:
        secret = self.settings.telegram_webhook_secret
        if not secret:
            raise NotEnabled("the Telegram webhook is off: set TELEGRAM_WEBHOOK_SECRET")
        if not presented:
            raise AuthenticationFailed("missing X-Telegram-Bot-Api-Secret-Token header")
        if not hmac.compare_digest(presented.encode(), secret.encode()):
            raise WrongSecret("wrong X-Telegram-Bot-Api-Secret-Token")

    async def handle(self, update: TgUpdate, client_ip: Optional[str] = None) -> Optional[TgSendMessage]:
        """The sendMessage to return, or None when the update needs no answer. `client_ip`: the
        webhook caller's address (checked against the bot key's IP allowlist)."""
        message = update.carried_message()
        text = None if message is None else (message.text if message.text is not None else message.caption)
        if not await self.chats.first_delivery(update.update_id):
            return None
        if message is None or not text or not text.strip():
            return None
        command = parse_command(text.strip())
        if command is not None and command.bot and not self._addressed_to_me(command.bot):
            return None
        chat = Chat(message.chat.id, client_ip)
        try:
            self.access.check_chat(chat.id)
            answer = await (self._answer(chat, text.strip()) if command is None else self._command(chat, command))
        except ChatRefused as refused:
            answer = refused.reply
        return self._reply(message, answer)

    def _addressed_to_me(self, bot: str) -> bool:
        mine = self.settings.telegram_bot_username.lstrip("@")
        return not mine or bot.lower() == mine.lower()

    def _models(self, principal: Principal) -> list[str]:
        return principal.allowed_models(self.allowed)

    def _model(self, chosen: Optional[str], principal: Principal) -> str:
        """The chat's model if the bot's key may use it, else the bot's default, else the key's."""
        models = self._models(principal)
        for candidate in (chosen, self.default_model, principal.default_model):
            if candidate in models:
                return candidate
        if not models:
            logger.error("TELEGRAM_API_KEY %s may use none of the bot's models %s", principal.key_id, self.allowed)
            raise ChatRefused(UNAVAILABLE)
        return models[0]

    async def _command(self, chat: Chat, command: Command) -> str:
        if command.name in ("start", "help"):
            principal = await self.access.principal(chat.client_ip)
            model = self._model((await self.chats.get(chat.key)).model, principal)
            return (f"Hello! I answer with the model {model}. Send me a message.\n"
                    f"/reset starts a new conversation, /model <name> picks a model "
                    f"({', '.join(self._models(principal))}), /more sends the rest of a long answer.")
        if command.name == "reset":
            await self.chats.reset(chat.key)
            return "Conversation cleared."
        if command.name == "model":
            return await self._choose_model(chat, command.args)
        if command.name == "more":
            state = await self.chats.get(chat.key)
            if not state.pending:
                return "Nothing more to send."
            await self.chats.set_pending(chat.key, state.pending[1:])
            return state.pending[0] + (MORE_HINT if len(state.pending) > 1 else "")
        return f"Unknown command /{shortened(command.name)}. Try /help."

    async def _choose_model(self, chat: Chat, name: str) -> str:
        principal = await self.access.principal(chat.client_ip)
        models = self._models(principal)
        current = self._model((await self.chats.get(chat.key)).model, principal)
        if not name:
            return f"Current model: {current}. Available: {', '.join(models)}."
        if name not in models:
            return f"Unknown model {shortened(name)!r}. Available: {', '.join(models)}."
        await self.chats.set_model(chat.key, name)
        return f"Model set to {name}."

    async def _answer(self, chat: Chat, text: str) -> str:
        await self.access.count_chat(chat.id)  # first: a refused chat leaves no admission unsettled
        admission = await self.access.admit(chat.client_ip)  # the bot's key, through the one pipeline
        state = await self.chats.get(chat.key)
        model = self._model(state.model, admission.principal)
        user = {"role": "user", "content": text}
        history = block_window(state.messages + [user], self.settings.telegram_history_messages)
        try:
            answer = await self._generate(model, history, admission)
        except AICoreError as error:  # tell the chat; an HTTP error would make Telegram retry
            logger.warning("telegram answer failed", extra={"model": model, "error": error.message})
            if isinstance(error, Overloaded):
                shown = f"the service is busy; try again in {error.retry_after_s} s"
            else:
                shown = error.message if error.status < 500 else "the model failed; try again later"
            return f"Sorry, I could not answer: {shown}"
        await self.chats.append(chat.key, [user, {"role": "assistant", "content": answer}])
        parts = split_message(answer, TELEGRAM_LIMIT - len(MORE_HINT))
        await self.chats.set_pending(chat.key, parts[1:])
        return parts[0] + MORE_HINT if len(parts) > 1 else parts[0]

    async def _generate(self, model: str, messages: list[dict], admission: Admission) -> str:
        """The one place the bot starts a generation: the pipeline takes the key's limits (a refusal
        is told politely) and charges its usage to the bot's key."""
        try:
            async with admission.settling():
                generation = await self.service.start(
                    admission, model, uuid.uuid4().hex, SamplingParams(max_tokens=self.settings.telegram_max_tokens),
                    messages=messages,
                )
                result = await generation.collect()
            return result.text.strip() or "(the model gave an empty answer)"
        except QuotaExceeded as error:  # the bot's key used up its day or month: say so, not "busy"
            raise ChatRefused(f"I have reached my usage quota. Please try again in "
                              f"{duration_text(error.retry_after_s)}.") from None
        except RateLimited as error:
            raise ChatRefused(f"I am answering too many people right now. Please try again in "
                              f"{error.retry_after_s} s.") from None

    def _reply(self, message: TgMessage, text: str) -> TgSendMessage:
        group = message.chat.type in ("group", "supergroup")
        return TgSendMessage(
            chat_id=message.chat.id,
            text=within_limit(text),  # whatever a reply says, Telegram's limit holds: never a 500
            message_thread_id=message.message_thread_id,
            reply_parameters=TgReplyParameters(message_id=message.message_id) if group else None,
        )
