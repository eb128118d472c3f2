"""Wire types of `"format": "email"`: what the caller tells about the incoming mail, the reply."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class EmailOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    subject: Optional[str] = Field(None, max_length=998, description="Subject of the email being answered.")
    sender: Optional[str] = Field(None, max_length=320, description="Who wrote it (used in the quote header).")
    original: Optional[str] = Field(None, description="Body of the email being answered (plain text).")
    quote_original: bool = Field(False, description="Append the original, quoted, to both bodies.")


class EmailReply(BaseModel):
    subject: str = Field(description="Subject line of the reply.")
    text: str = Field(description="Plain-text body.")
    html: str = Field(description="HTML body; every model-written character is escaped.")
