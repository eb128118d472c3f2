"""The floor of the cache benchmarks: a plain FastAPI app answering a cache hit's JSON as a constant.

Run alone under uvicorn (scripts/bench_cache.py), and behind Ray Serve as the no-op
(scripts/noop_serve_app.py): the same routes, the same answer.
"""

from fastapi import FastAPI

CONSTANT = {"response": "Jupiter.", "model": "constant", "tokens_used": 12, "processing_time": 0.0,
            "timestamp": "2026-01-01T00:00:00Z", "cached": True}

app = FastAPI()


@app.post("/api/v1/generate")
async def generate(body: dict):
    return CONSTANT


@app.get("/api/v1/health")
async def health():
    return {"status": "ok", "models": {"noop": "ready"}}  # what ServeProcess waits for
