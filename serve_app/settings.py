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
    # Web clients
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS (`*` for any); empty: CORS off.")
    cors_methods: str = Field("GET,POST,OPTIONS", description="Comma-separated methods allowed by CORS.")
    cors_headers: str = Field(
        "Content-Type,Authorization,X-API-Key,X-Request-ID", description="Comma-separated request headers CORS allows."
    )
    # Email / batch
    batch_max_items: int = Field(16, ge=1, description="Most items one POST /api/v1/generate/batch may carry.")
    batch_concurrency: int = Field(4, ge=1, description="Items of one batch generated at the same time.")
    # Telegram
    telegram_webhook_secret: str = Field("", description="X-Telegram-Bot-Api-Secret-Token expected; empty: webhook off.")
    telegram_api_key: str = Field("", description="API key the Telegram bot's generations run under (one of API_KEYS).")
    telegram_bot_username: str = Field("", description="The bot's @username; commands addressed to other bots are ignored.")
    telegram_model: Optional[str] = Field(None, description="Model a chat starts with; default: DEFAULT_MODEL.")
    telegram_models: str = Field("", description="Comma-separated models /model may pick; empty: every model.")
    telegram_max_tokens: int = Field(400, ge=1, description="Longest answer (tokens) the bot generates.")
    telegram_history_messages: int = Field(20, ge=2, description="Messages of a chat's history sent to the model.")
    telegram_history_chats: int = Field(10000, ge=1, description="Chats whose history is kept (least recently used dropped).")
    telegram_history_ttl_s: float = Field(86400, gt=0, description="A chat's history is forgotten after this idle time.")

    def bootstrap_keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @staticmethod
    def _csv(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    def cors(self) -> tuple[list[str], list[str], list[str]]:
        return self._csv(self.cors_origins), self._csv(self.cors_methods), self._csv(self.cors_headers)

    def telegram_model_list(self) -> list[str]:
        return self._csv(self.telegram_models)

    def resolve(self, value: str) -> Path:
        """A relative path means the working directory if it exists there, else the project root."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return (PROJECT_ROOT / path).resolve()
