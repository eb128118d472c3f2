"""Dropping a deleted session's kept KV on its model's replica (deployments/model_deployment.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serve_app.model_router import ModelRouter

logger = logging.getLogger("aicore.sessions")

FORGET_TIMEOUT_S = 10.0  # a busy replica answers after its queue; the delete does not wait longer


async def forget_conversation(router: ModelRouter, status: Any, model: str, conversation: str) -> bool:
    """Ask `model`'s replica to drop the KV it keeps for `conversation` ("<owner>/<session id>").

    Best effort, never an error for the caller: the model may be gone from models.json, not loaded
    (then nothing is kept, and a call would load it), or its deployment may not have
    `forget_conversation` (an older replica). True when a replica was asked and answered."""
    entry = router.entries.get(model)
    if entry is None:
        return False
    _, running = (await status.states(stale_ok=True)).get(model, ("unknown", 0))
    if not running:
        return False
    try:
        # Routed by the conversation (deployments/routing.py): the replica its turns went to, unless
        # they moved (a full or gone replica); KV kept elsewhere ages out of that replica's cache.
        await asyncio.wait_for(entry.handle.forget_conversation.remote(conversation), FORGET_TIMEOUT_S)
    except Exception as error:  # no such method on the replica, replica gone, timeout
        logger.warning("kept KV of a deleted session not dropped on %s: %s", model, type(error).__name__)
        return False
    return True
