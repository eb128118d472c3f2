"""Readiness for a load balancer: the default model ready, Redis reachable (when required), memory headroom."""

from __future__ import annotations

from typing import Optional


def memory_available_percent(meminfo: str = "/proc/meminfo") -> Optional[float]:
    """MemAvailable / MemTotal of this node, in percent; None where /proc is not there."""
    try:
        fields = dict(line.split(":", 1) for line in open(meminfo).read().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0])
        return round(100.0 * int(fields["MemAvailable"].split()[0]) / total, 1)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return None


async def readiness(app) -> tuple[bool, dict]:
    settings = app.state.settings
    states = await app.state.model_status.states()
    default = app.state.router.default_model
    reasons = []
    if states.get(default, ("unknown", 0))[0] != "ready":
        reasons.append(f"default model {default!r} is not ready")
    redis = None
    if settings.redis_url:
        redis = "ok" if await app.state.store.ping() else "down"
        if redis == "down" and settings.ready_requires_redis:
            reasons.append("Redis is unreachable")
    memory = memory_available_percent()
    if memory is not None and memory < settings.ready_min_memory_percent:
        reasons.append(f"only {memory}% of the node's memory is available")
    body = {
        "status": "not_ready" if reasons else "ready",
        "default_model": default,
        "models": {name: state for name, (state, _) in states.items()},
        "redis": redis,
        "memory_available_percent": memory,
        "reasons": reasons,
    }
    return not reasons, body
