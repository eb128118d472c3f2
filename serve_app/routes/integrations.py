"""Routes for the bots: batch generation (email) and the Telegram webhook. Logic lives elsewhere."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from serve_app.auth import Principal, require_key
from serve_app.protocol.batch import BatchRequest, BatchResponse
from serve_app.protocol.telegram import TgSendMessage, TgUpdate

router = APIRouter(prefix="/api/v1")


@router.post("/generate/batch", response_model=BatchResponse, response_model_exclude_none=True)
async def generate_batch(body: BatchRequest, request: Request, principal: Principal = Depends(require_key)):
    return await request.app.state.batch.run(body, principal)


def telegram_secret(request: Request, x_telegram_bot_api_secret_token: Optional[str] = Header(None)) -> None:
    """Checked before the body is read: a wrong secret is a 401/403 whatever the payload."""
    request.app.state.telegram.check_secret(x_telegram_bot_api_secret_token)


@router.post("/webhooks/telegram", dependencies=[Depends(telegram_secret)], responses={200: {
    "model": TgSendMessage,
    "description": "A sendMessage call for Telegram to make, or `{}` when there is nothing to say.",
}})
async def telegram_webhook(update: TgUpdate, request: Request):
    reply = await request.app.state.telegram.handle(update)
    return JSONResponse(reply.model_dump(exclude_none=True) if reply else {})
