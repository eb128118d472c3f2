"""Response cache: a hit answers from the store with no model compute.

The key hashes everything that can change the answer: tenant, endpoint, model name and
the model's identity (its weights' revision and config), the normalized prompt or
messages, and every sampling parameter. Only deterministic requests (temperature 0 or
a seed) are cached unless the request opts in; a store failure is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Callable, Optional

from core.errors import StoreUnavailable
from core.types import GenerationRequest, GenerationResult, Usage
from serve_app.state.store import Store

logger = logging.getLogger("aicore.cache")


def wants_cache(request: GenerationRequest, opt_in: Optional[bool], no_cache_header: bool) -> bool:
    if opt_in is False or no_cache_header or request.sampling.logprobs is not None:
        return False  # the cache keeps text only, not log probabilities
    if opt_in is True:
        return True
    return request.sampling.temperature == 0 or request.sampling.seed is not None


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def cache_key(request: GenerationRequest, *, tenant: str, endpoint: str, model: str, identity: str) -> str:
    payload = {
        "tenant": tenant,
        "endpoint": endpoint,
        "model": model,
        "identity": identity,
        "prompt": _normalize(request.prompt) if request.prompt is not None else None,
        "messages": [{**m, "content": _normalize(m["content"])} for m in request.messages or ()],
        "sampling": asdict(request.sampling),
        "adapter": request.adapter,
    }
    if request.tools:  # tools a chat template renders change the prompt, not always the grammar
        payload["tools"] = request.tools
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"cache:{digest}"


class ResponseCache:
    def __init__(self, store: Store, ttl_s: float, on_write: Callable[[int], None] = lambda n: None):
        self.store = store
        self.ttl_s = ttl_s
        self._on_write = on_write

    async def get(self, key: str) -> Optional[GenerationResult]:
        try:
            raw = await self.store.get(key)
        except StoreUnavailable:
            logger.warning("cache lookup skipped: store unavailable")
            return None
        if raw is None:
            return None
        data = json.loads(raw)
        return GenerationResult(data["text"], data["finish_reason"], Usage(**data["usage"]))

    async def put(self, key: str, result: GenerationResult) -> int:
        """Store a finished answer; returns the bytes written (0 when the store is down)."""
        raw = json.dumps({"text": result.text, "finish_reason": result.finish_reason,
                          "usage": asdict(result.usage)})
        try:
            await self.store.set(key, raw, ttl_s=self.ttl_s)
        except StoreUnavailable:
            logger.warning("cache write skipped: store unavailable")
            return 0
        self._on_write(len(raw))
        return len(raw)
