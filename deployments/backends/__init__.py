"""Built-in backends; importing this package registers them."""

from deployments.backends import gguf  # noqa: F401
from deployments.backends.base import Backend, ThreadedBackend, get_backend, register_backend

__all__ = ["Backend", "ThreadedBackend", "get_backend", "register_backend"]
