"""Built-in backends; importing this package registers them."""

# Each module imports its engine (torch, onnxruntime, llama_cpp) only inside load().
from deployments.backends import gguf, onnx_embedding, transformers_embedding  # noqa: F401
from deployments.backends.base import Backend, ThreadedBackend, get_backend, register_backend

__all__ = ["Backend", "ThreadedBackend", "get_backend", "register_backend"]
