"""Pydantic models the structured-output tests ask for, in the engine (tests/engine/) and through the
app with the `openai` SDK (tests/integration/), and the email they triage: both layers answer the same."""

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field

EMAIL = "Email: 'My parcel to Berlin never arrived. I want my money back now!' Triage it as JSON."


class Address(BaseModel):
    city: str = Field(max_length=40)
    postcode: Optional[str] = Field(default=None, max_length=12)


class Triage(BaseModel):
    intent: Literal["refund", "question", "complaint"]
    reply_needed: bool
    urgency: int = Field(ge=1, le=5)
    tags: list[Annotated[str, Field(max_length=20)]] = Field(min_length=1, max_length=3)
    sender: Address
    forward_to: Optional[Address] = None
