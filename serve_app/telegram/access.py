"""Whom the Telegram bot answers, and under which key: the checks any client's request passes.

The bot's generations run under TELEGRAM_API_KEY, a managed key, admitted by the one pipeline
(serve_app/pipeline.py) like any client's request: valid, enabled, not expired, the `inference`
scope (and here not the `admin` one), the webhook caller's address, its models and requests/tokens
per minute; usage is counted on it. On top, each chat has its own requests-per-minute window
(TELEGRAM_CHAT_RPM) on the shared store, and TELEGRAM_ALLOWED_CHATS can name the only chats answered.

A refusal is a `ChatRefused` carrying the polite text sent to the chat: an HTTP error would make
Telegram deliver the update again and again. Only an unreachable store is an HTTP error (503),
so that Telegram redelivers the update once it is back.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from core.errors import AICoreError, StoreUnavailable
from core.settings import Settings
from serve_app.access.auth import Principal
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.state.store import Store

logger = logging.getLogger("aicore.telegram")

CHAT_RATE_PREFIX = "aicore:telegram:rate:"
WINDOW_S = 60
NOT_HERE = "Sorry, this bot does not answer in this chat."
UNAVAILABLE = "Sorry, this bot is not available right now."


class ChatRefused(Exception):
    """Not answered by a model; `reply` is what the chat is told instead."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class TelegramAccess:
    def __init__(self, settings: Settings, pipeline: Pipeline, store: Store):
        self.key = settings.telegram_api_key or None
        self.allowed_chats = frozenset(settings.telegram_allowed_chats)
        self.chat_rpm = settings.telegram_chat_rpm
        self.pipeline, self.store = pipeline, store
        if self.key and settings.telegram_allow_bootstrap_key and self.key in settings.api_keys:
            logger.warning("TELEGRAM_API_KEY is a bootstrap key (TELEGRAM_ALLOW_BOOTSTRAP_KEY=true): the bot runs "
                           "as admin with no key limits; only TELEGRAM_CHAT_RPM and TELEGRAM_ALLOWED_CHATS hold it")

    def check_chat(self, chat_id: int) -> None:
        if self.allowed_chats and chat_id not in self.allowed_chats:
            raise ChatRefused(NOT_HERE)

    async def admit(self, client_ip: Optional[str] = None) -> Admission:
        """The bot's key, checked as a client's key is on every request (the store is read each time,
        so a revoke or a change of its limits applies to the next update)."""
        context = RequestContext("telegram", self.key, client_ip)
        return Admission(self.pipeline, context, await self._checked(context))

    async def principal(self, client_ip: Optional[str] = None) -> Principal:
        """The bot's key as it stands now, for a command that starts no request (`/model`)."""
        return await self._checked(RequestContext("telegram", self.key, client_ip))

    async def _checked(self, context: RequestContext) -> Principal:
        try:
            principal = await self.pipeline.check(context, "inference")
        except StoreUnavailable:
            raise
        except AICoreError as error:
            logger.error("TELEGRAM_API_KEY refused: %s (%s)", error.message, error.code)
            raise ChatRefused(UNAVAILABLE) from None
        if "admin" in principal.scopes and not principal.bootstrap:
            logger.error("TELEGRAM_API_KEY %s has the admin scope: give the bot an inference-only key",
                         principal.key_id)
            raise ChatRefused(UNAVAILABLE)
        return principal

    async def count_chat(self, chat_id: int) -> None:
        """One model answer for the chat in its own per-minute window (TELEGRAM_CHAT_RPM)."""
        if self.chat_rpm:
            key = f"{CHAT_RATE_PREFIX}{chat_id}"
            used = await self.store.incr_window(key, 1, WINDOW_S)
            if used > self.chat_rpm:
                wait = math.ceil(await self.store.ttl(key) or WINDOW_S)
                raise ChatRefused(f"You are sending messages faster than I can answer. Please wait {wait} s "
                                  "and try again.")
