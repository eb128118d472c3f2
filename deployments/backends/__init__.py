"""Built-in backends; importing this package registers them."""

# Each module imports its engine (torch, onnxruntime, llama_cpp) only inside load().
from deployments.backends import (  # noqa: F401
    gguf,
    onnx_embedding,
    onnx_lm,
    transformers_embedding,
    transformers_lm,
)
from deployments.backends.base import Backend, ThreadedBackend, get_backend, register_backend

__all__ = ["Backend", "ThreadedBackend", "get_backend", "register_backend"]
