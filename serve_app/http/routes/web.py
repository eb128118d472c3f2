"""Web client routes: the WebSocket API, the chat page at `/` and the operator's console at `/admin`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, WebSocket
from fastapi.responses import FileResponse

from serve_app.websocket.session import WsGate, WsLimits, WsSession

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Only the page's own files and its own WebSocket: no inline script or style, no image or anything
# else from elsewhere (a model answer naming a URL cannot make the page load it); the browser itself
# refuses HTML parsed from strings (Trusted Types: innerHTML and the like throw); no other site may
# frame the page (it holds a key: clickjacking).
PAGE_CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self' ws: wss:",
    "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    "require-trusted-types-for 'script'", "trusted-types 'none'",
])
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

# The console (static/admin/) holds an admin key: stricter still. It only calls this server's own
# API, posts no form anywhere, and loads nothing but its own script and style.
ADMIN_PAGE_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'none'",
    "Cache-Control": "no-store",
}

router = APIRouter()


def _gate(state) -> WsGate:
    """The replica's one gate for sockets before auth (made at the first socket)."""
    gate = getattr(state, "ws_gate", None)
    if gate is None:
        gate = state.ws_gate = WsGate(WsLimits.from_settings(state.settings), state.store)
    return gate


@router.websocket("/api/v1/ws")
async def websocket(ws: WebSocket):
    state = ws.app.state
    await WsSession(ws, state.generation, state.pipeline, _gate(state), state.metrics.record).run()


@router.get("/", include_in_schema=False)
async def chat_page():
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@router.get("/admin", include_in_schema=False)
async def admin_console():
    """The operator's console: a static page that calls the admin API with the key pasted into it."""
    return FileResponse(STATIC_DIR / "admin" / "index.html", headers=ADMIN_PAGE_HEADERS)
