"""Web client routes: the WebSocket API and the chat page at `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, WebSocket
from fastapi.responses import FileResponse

from serve_app.integrations.ws_session import WsSession

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Only the page's own files and its own WebSocket: no inline script, nothing from elsewhere; no
# other site may frame the page (it holds a key: clickjacking).
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter()


@router.websocket("/api/v1/ws")
async def websocket(ws: WebSocket):
    await WsSession(ws, ws.app.state.generation, ws.app.state.pipeline).run()


@router.get("/", include_in_schema=False)
async def chat_page():
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)
