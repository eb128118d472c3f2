"""AI Core ingress: the public surface is the builder and the settings."""

from core.settings import Settings

__all__ = ["Settings", "build_app"]


def build_app(args=None):  # imported lazily: importing settings must not pull Ray in
    from serve_app.builder import build_app as _build

    return _build(args)
