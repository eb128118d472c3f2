"""Whom the Telegram bot answers, and under which key: the checks any client's request passes.

The bot's generations run under TELEGRAM_API_KEY, a managed key: it must be valid, enabled, not
expired, have the `inference` scope and not the `admin` one, allow the webhook caller's address,
and its models and requests/tokens per minute apply; usage is counted on it. On top, each chat
has its own requests-per-minute window (TELEGRAM_CHAT_RPM) on the shared store, and
TELEGRAM_ALLOWED_CHATS can name the only chats answered.

A refusal is a `ChatRefused` carrying the polite text sent to the chat: an HTTP error would make
Telegram deliver the update again and again. Only an unreachable store is an HTTP error (503),
so that Telegram redelivers the update once it is back.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from starlette.requests import HTTPConnection

from deployments.errors import AICoreError
from serve_app.access_errors import RateLimited
from serve_app.auth import Authenticator, Principal
from serve_app.keys import KeyService
from serve_app.ratelimit import Limits, RateLimiter
from serve_app.settings import Settings
from serve_app.store import Store, StoreUnavailable

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
    def __init__(self, settings: Settings, auth: Authenticator, limiter: RateLimiter, keys: KeyService,
                 store: Store):
        self.key = settings.telegram_api_key or None
        self.allowed_chats = settings.telegram_chat_ids()
        self.chat_rpm = settings.telegram_chat_rpm
        self.auth, self.limiter, self.keys, self.store = auth, limiter, keys, store
        if self.key and settings.telegram_allow_bootstrap_key and self.key in settings.bootstrap_keys():
            logger.warning("TELEGRAM_API_KEY is a bootstrap key (TELEGRAM_ALLOW_BOOTSTRAP_KEY=true): the bot runs "
                           "as admin with no key limits; only TELEGRAM_CHAT_RPM and TELEGRAM_ALLOWED_CHATS hold it")

    def check_chat(self, chat_id: int) -> None:
        if self.allowed_chats and chat_id not in self.allowed_chats:
            raise ChatRefused(NOT_HERE)

    async def principal(self, connection: Optional[HTTPConnection] = None) -> Principal:
        """The bot's key, checked as a client's key is on every request (the store is read each time,
        so a revoke or a change of its limits applies to the next update)."""
        try:
            principal = await self.auth.check(self.key, connection)
        except StoreUnavailable:
            raise
        except AICoreError as error:
            logger.error("TELEGRAM_API_KEY refused: %s (%s)", error.message, error.code)
            raise ChatRefused(UNAVAILABLE) from None
        if "inference" not in principal.scopes:
            logger.error("TELEGRAM_API_KEY %s lacks the inference scope", principal.key_id)
            raise ChatRefused(UNAVAILABLE)
        if "admin" in principal.scopes and not principal.bootstrap:
            logger.error("TELEGRAM_API_KEY %s has the admin scope: give the bot an inference-only key",
                         principal.key_id)
            raise ChatRefused(UNAVAILABLE)
        return principal

    async def admit(self, principal: Principal, chat_id: int) -> Optional[Limits]:
        """Count one model answer for the chat, then for the key; the key's limits to settle against."""
        if self.chat_rpm:
            key = f"{CHAT_RATE_PREFIX}{chat_id}"
            used = await self.store.incr_window(key, 1, WINDOW_S)
            if used > self.chat_rpm:
                wait = math.ceil(await self.store.ttl(key) or WINDOW_S)
                raise ChatRefused(f"You are sending messages faster than I can answer. Please wait {wait} s "
                                  "and try again.")
        if principal.bootstrap:
            return None
        limits = self.limiter.limits(principal.rate_limit_per_minute, principal.tokens_per_minute)
        try:
            await self.limiter.admit(principal.key_id, limits)
        except RateLimited as error:
            raise ChatRefused(f"I am answering too many people right now. Please try again in "
                              f"{error.retry_after_s} s.") from None
        return limits

    async def settle(self, principal: Principal, limits: Optional[Limits], status: int,
                     prompt_tokens: int, completion_tokens: int) -> None:
        """Charge the answer's tokens to the key's window and count its usage, as the HTTP routes do."""
        try:
            if limits is not None:
                await self.limiter.add_tokens(principal.key_id, limits, prompt_tokens + completion_tokens)
            await self.keys.record_usage(principal.key_id, status, prompt_tokens, completion_tokens)
        except StoreUnavailable as error:
            logger.warning("could not record usage for %s: %s", principal.key_id, error.message)
