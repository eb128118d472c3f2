"""Ray Serve request router of GGUF chat models: a conversation's turns go to the replica that keeps
its KV (in a slot or saved in host RAM, deployments/engine/saved_prompts.py).

The preferred replica is chosen by rendezvous (highest-random-weight) hashing of the request's
affinity key over the current replica ids: no shared state, so every ingress replica agrees, and a
replica that joins or leaves moves only the conversations it wins or held. It is ranked first; two
random others follow, so a full or gone replica falls back as Ray's default router would.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Optional

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from core.types import GenerationRequest

# A prompt (no messages) has no marked start: its first characters stand for the conversation. Long
# enough to pass a short shared preamble, short enough that a chat's first turn already covers it.
PROMPT_START_CHARS = 512


def _first(messages: tuple[dict, ...], role: str) -> str:
    content = next((m.get("content") for m in messages if m.get("role") == role), None)
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True, default=str)


def affinity_key(method: str, args: list) -> Optional[str]:
    """What ties a request to the replica holding its KV; None routes it as Ray's default does.

    A server-side session is its `conversation` (also what `forget_conversation` is called with,
    so a deleted session's KV is dropped where it lives). A client that resends the whole history
    is known by its key's cache scope, adapter and the conversation's stable start (first system
    and first user message, or the prompt's first characters): the same on every turn."""
    if not args:
        return None
    if method == "forget_conversation":
        return args[0] if isinstance(args[0], str) else None
    request = args[0]
    if method != "stream" or not isinstance(request, GenerationRequest):
        return None
    if request.conversation:
        return request.conversation
    if request.messages:
        start = _first(request.messages, "system") + "\x1f" + _first(request.messages, "user")
    elif request.prompt:
        start = request.prompt[:PROMPT_START_CHARS]
    else:
        return None
    return "\x1e".join((request.cache_scope or "", request.adapter or "", start))


def rendezvous_order(key: str, replica_ids: list[str]) -> list[str]:
    """Replica ids by descending weight hash(key, id): the first is the key's replica."""
    seed = hashlib.blake2b(key.encode(), digest_size=16).digest()

    def weight(replica_id: str) -> bytes:
        return hashlib.blake2b(replica_id.encode(), digest_size=8, key=seed).digest()

    return sorted(replica_ids, key=weight, reverse=True)


class ConversationRouter(FIFOMixin, RequestRouter):
    """With FIFOMixin, as Ray's default router: a replica found goes to the oldest request waiting.
    Without it (Ray's out-of-order mode) a replica found by a routing task that was not started for
    a particular request matched no request, and a second request sent while a first one streamed
    (two on one WebSocket) could wait for ever: tests/integration/test_websocket_and_cors.py hung.
    Affinity holds whenever requests are not queueing for a replica; under a queue a turn may go
    to another replica, which then prefills its history once."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> list[list[RunningReplica]]:
        if pending_request is not None:  # once every rank was tried, back off as Ray's default does
            pending_request.routing_context.should_backoff = True
        if len(candidate_replicas) <= 1:  # one replica (the default): nothing to choose, no hashing
            return [list(candidate_replicas)]
        key = None if pending_request is None else affinity_key(
            pending_request.metadata.call_method, pending_request.args)
        if key is None:
            return [random.sample(candidate_replicas, 2)]  # Ray's power of two choices
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        preferred = by_id[rendezvous_order(key, list(by_id))[0]]
        rest = [replica for replica in candidate_replicas if replica is not preferred]
        return [[preferred], random.sample(rest, min(2, len(rest)))]
