"""Environment settings (pydantic-settings). Read by the builder, passed to replicas as a value."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", protected_namespaces=(), case_sensitive=False)

    api_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    api_port: int = Field(8000, description="Port the HTTP server listens on.")
    log_level: str = Field("INFO", description="Python log level for every process.")
    log_format: Literal["text", "json"] = Field("text", description="`json` gives one JSON object per line.")
    log_dir: Optional[str] = Field(None, description="Also append every process's log to <dir>/aicore.log.")
    model_config_path: str = Field("models.json", description="The model registry file.")
    model_cache_dir: str = Field("models", description="Where assembled/converted weights are kept.")
    default_model: Optional[str] = Field(None, description="Model used when a request names none; default: the first.")
    api_key_header: str = Field("X-API-Key", description="Header that carries the API key.")
    api_keys: str = Field("", description="Comma-separated bootstrap API keys (admin).")
    max_prompt_length: int = Field(32000, ge=1, description="Longest prompt (characters) accepted.")
    request_timeout_s: float = Field(
        300, gt=0, description="Longest wait for a model's first token before answering 503."
    )
    ingress_replicas: int = Field(1, ge=1, description="Ingress replicas (each is one HTTP worker).")
    metrics_flush_s: float = Field(1.0, gt=0, description="How often an ingress replica ships metrics to the hub.")

    def bootstrap_keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    def resolve(self, value: str) -> Path:
        """A relative path means the working directory if it exists there, else the project root."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return (PROJECT_ROOT / path).resolve()
