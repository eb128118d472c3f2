"""The parts of Telegram Bot API objects the webhook reads, and the method it answers with.

Unknown fields are ignored: Telegram adds fields over time and sends many we do not need.
See https://core.telegram.org/bots/api#update and #sendmessage.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol.common import Int


class _TelegramObject(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TgChat(_TelegramObject):
    id: Int
    type: str = Field(description="private, group, supergroup or channel.")
    title: Optional[str] = None
    username: Optional[str] = None


class TgMessage(_TelegramObject):
    message_id: Int
    chat: TgChat
    date: Optional[Int] = None
    message_thread_id: Optional[Int] = None
    text: Optional[str] = None
    caption: Optional[str] = None


class TgUpdate(_TelegramObject):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"update_id": 829301457, "message": {
            "message_id": 311, "date": 1795313057, "text": "What are your opening hours?",
            "chat": {"id": 4211, "type": "private", "username": "ann"}}},
    ]})

    update_id: Int
    message: Optional[TgMessage] = None
    edited_message: Optional[TgMessage] = None
    channel_post: Optional[TgMessage] = None
    edited_channel_post: Optional[TgMessage] = None

    def carried_message(self) -> Optional[TgMessage]:
        return self.message or self.edited_message or self.channel_post or self.edited_channel_post


class TgReplyParameters(BaseModel):
    message_id: int
    allow_sending_without_reply: bool = True


class TgNoReply(BaseModel):
    """`{}`: the update needs no answer (a duplicate delivery, no text, a command for another bot)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})


class TgSendMessage(BaseModel):
    """Returned as the webhook's response body: Telegram then calls sendMessage itself."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"method": "sendMessage", "chat_id": 4211, "text": "We are open Monday to Saturday, 9 to 18.",
         "reply_parameters": {"message_id": 311, "allow_sending_without_reply": True}},
    ]})

    method: Literal["sendMessage"] = "sendMessage"
    chat_id: int
    text: str = Field(min_length=1, max_length=4096)
    message_thread_id: Optional[int] = None
    reply_parameters: Optional[TgReplyParameters] = None
