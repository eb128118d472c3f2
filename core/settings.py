"""Environment settings (pydantic-settings). Read by the builder, passed to replicas as a value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_API_KEY_LENGTH = 16
IngressMode = Literal["proxy", "haproxy"]


def _comma_separated(value):
    """`a, b,c` (an environment variable or a string in `args`) or a list: the list of its items."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list setting: comma-separated in the environment (NoDecode: not JSON), a list or a string in `args`.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)]


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting never prints the values (API keys, secrets) in the error.
    model_config = SettingsConfigDict(extra="forbid", protected_namespaces=(), case_sensitive=False,
                                      hide_input_in_errors=True)

    api_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    api_port: int = Field(8000, description="Port the HTTP server listens on.")
    log_level: str = Field("INFO", description="Python log level for every process.")
    debug: bool = Field(
        False, description="Debug logs in every process (LOG_LEVEL becomes DEBUG) and a traceback in the log for "
        "every 5xx; responses never carry tracebacks or internals.",
    )
    log_format: Literal["text", "json"] = Field("text", description="`json` gives one JSON object per line.")
    log_dir: Optional[str] = Field(None, description="Also append every process's log to <dir>/aicore.log.")
    model_config_path: str = Field(
        "models.json", description="The model registry file (MODEL_CONFIG_PATH; `args.model_config_path` in "
        "serve_config.yaml wins over the environment, and the shipped serve_config.yaml names none).",
    )
    model_set: Optional[str] = Field(
        None, description="Set by scripts.deploy/scripts.run_server in `args` only: a hash of the model names; "
        "a change makes Ray Serve rebuild the whole app.",
    )
    code_revision: Optional[str] = Field(
        None, description="Set by scripts.deploy/scripts.run_server in `args` only: a hash of the app's code; "
        "a change makes Ray Serve rebuild the whole app.",
    )
    model_cache_dir: str = Field("models", description="Where assembled/converted weights are kept.")
    default_model: Optional[str] = Field(None, description="Model used when a request names none; default: the first.")
    default_embedding_model: Optional[str] = Field(
        None, description="Embedding model used when a request names none; default: the first with task embed."
    )
    api_key_header: str = Field("X-API-Key", description="Header that carries the API key.")
    api_keys: CommaList = Field([], description="Comma-separated bootstrap API keys (admin), each at least 16 characters.")
    allow_short_api_keys: bool = Field(
        False, description="Accept API_KEYS shorter than 16 characters (never on a server others can reach)."
    )
    docs_enabled: bool = Field(True, description="Serve /docs, /redoc and /openapi.json; false: they answer 404.")
    max_prompt_length: int = Field(32000, ge=1, description="Longest prompt (characters) accepted.")
    request_timeout_s: float = Field(
        300, gt=0, description="Longest wait for a model's first token before answering 503."
    )
    redis_url: Optional[str] = Field(
        None, description="Redis for cache, sessions, keys and limits; unset: one process's memory (one ingress replica)."
    )
    redis_password: Optional[str] = Field(
        None, description="Password for REDIS_URL when the URL carries none (a password in the URL wins)."
    )
    cache_redis_url: Optional[str] = Field(
        None, description="A Redis only for the response cache (it may evict, e.g. allkeys-lru), with REDIS_PASSWORD; "
        "unset: the cache shares REDIS_URL (or memory) with keys and sessions.",
    )
    cache_enabled: bool = Field(True, description="Answer repeated deterministic requests from the cache.")
    cache_ttl_s: float = Field(3600, gt=0, description="How long a cached answer lives.")
    cache_shared_across_keys: bool = Field(
        False, description="Let identical requests under different keys share cache entries."
    )
    session_ttl_s: float = Field(86400, gt=0, description="A chat session expires this long after its last turn.")
    max_in_flight_per_key: int = Field(
        16, ge=0, description="Requests one managed key may have running at once per ingress replica, on every channel "
        "(SSE streams, WebSocket messages, batch items, Telegram); one more answers 429 `too_many_in_flight`. "
        "0: no cap. Bootstrap keys are not capped.",
    )
    prefix_cache_scope: Literal["key", "shared"] = Field(
        "key", description="Whose cached prompt prefix a request may reuse in the engine: its own key's (`key`), "
        "or any request's (`shared`: faster for many keys with one system prompt, but a key can time whether "
        "another sent a prompt).",
    )
    web_token_keep_s: float = Field(
        86400, gt=0, description="An expired web token's entries (record, usage) are kept this long, then expire.",
    )
    quota_timezone: str = Field(
        "UTC", description="Time zone (IANA name, e.g. Europe/Berlin) whose calendar days and months the keys' daily "
        "and monthly quotas count in.",
    )
    usage_flush_s: float = Field(
        1.0, ge=0, description="How often each ingress replica writes the usage buckets it summed to Redis (one "
        "script call); 0: at each request's end.",
    )
    audit_retention_days: float = Field(
        90, gt=0, description="Audit log entries (admin actions, refused admin attempts) are kept this many days.",
    )
    audit_max_entries: int = Field(
        1_000_000, ge=1, description="The most admin-action entries the audit log keeps (the oldest go first).",
    )
    audit_mint_max_entries: int = Field(
        10_000, ge=1, description="The most web-token-mint entries the audit log keeps, apart from the admin "
        "actions' (a site minting one token per visitor evicts older mints, never an action).",
    )
    audit_mint_retention_s: float = Field(
        172_800, gt=0, description="Web-token-mint entries are kept this long (the mint stream expires this long "
        "after its newest mint); the default covers the longest a token lives (a day) and the day its records are "
        "kept after (WEB_TOKEN_KEEP_S's default).",
    )
    audit_refused_max_entries: int = Field(
        10_000, ge=1, description="The most refused-attempt entries the audit log keeps, apart from the admin "
        "actions' (a flood of refused requests evicts older refusals, never an action).",
    )
    ready_requires_redis: bool = Field(
        False, description="Readiness answers 503 while REDIS_URL is set and Redis is unreachable."
    )
    ready_min_memory_percent: float = Field(
        2.0, ge=0, le=100, description="Readiness answers 503 below this share of available node memory."
    )
    ingress_replicas: int = Field(
        1, ge=1, validation_alias=AliasChoices("ingress_replicas", "api_workers"),
        description="Ingress replicas (INGRESS_REPLICAS, or the spec's API_WORKERS; INGRESS_REPLICAS wins when "
        "both are set): Ray actors each running the FastAPI app, behind Serve's one HTTP proxy. More than one "
        "needs REDIS_URL.",
    )
    allow_replicas_without_redis: bool = Field(
        False, description="Start several ingress replicas without REDIS_URL anyway: each keeps its own managed keys, "
        "rate limits, cache and sessions (a test server with bootstrap keys only; never one others can reach).",
    )
    ingress_mode: IngressMode = Field(
        "proxy", description="What takes HTTP in front of the ingress replicas: `proxy` = Ray Serve's Python proxy; "
        "`haproxy` = Ray Serve's HAProxy + direct ingress (more requests/s; applied by the start path, "
        "scripts/serve.sh, not by a plain `serve run`; docs/benchmarks.md, docs/security.md).",
    )
    model_memory_budget: Optional[str] = Field(
        None, description="Memory (bytes or e.g. `12GiB`) loaded models may take together; default: "
        "total RAM minus MEMORY_HEADROOM. A load that does not fit is refused (409) or evicts (MODEL_EVICTION)."
    )
    memory_headroom: str = Field("2GiB", description="RAM left to Ray and the OS when MODEL_MEMORY_BUDGET is unset.")
    model_eviction: Literal["none", "lru"] = Field(
        "none", description="`lru`: a load that does not fit unloads the least recently used idle models first."
    )
    memory_alert_percent: float = Field(
        90, gt=0, le=100, description="Node memory use (percent) that logs a warning and sets aicore_node_memory_alert."
    )
    drain_timeout_s: float = Field(
        300, gt=0, description="How long an unload (or a replaced replica in a hot swap) waits for in-flight requests."
    )
    metrics_flush_s: float = Field(1.0, gt=0, description="How often an ingress replica ships metrics to the hub.")
    # Security. Lists are comma-separated in the environment and in `args` (or YAML lists there).
    rate_limit_per_minute: int = Field(0, ge=0, description="Default requests per minute per stored key; 0: unlimited.")
    tokens_per_minute: int = Field(0, ge=0, description="Default tokens (prompt+completion) per minute per stored key; 0: unlimited.")
    ip_allowlist: CommaList = Field([], description="Comma-separated CIDRs allowed to call any route; empty: everyone.")
    trusted_proxies: CommaList = Field([], description="Comma-separated CIDRs whose X-Forwarded-For is believed.")
    max_messages: int = Field(256, ge=1, description="Most chat messages in one request.")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Largest request body (bytes); larger answers 413.")
    body_timeout_s: float = Field(
        30, gt=0, description="How long a request body may take to arrive whole (from when the app starts reading "
        "it); slower answers 408 `body_timeout` and closes the connection.",
    )
    header_timeout_s: float = Field(
        10, gt=0, description="How long a request's line and headers may take to arrive, from the connection's "
        "accept or the next request's first byte: read by Ray's HTTP proxy (uvicorn, set by scripts.run_server); "
        "slower answers 408 `header_timeout` (a connection that sent nothing is closed).",
    )
    max_header_bytes: int = Field(
        32768, ge=1024, description="Largest request line and headers together (bytes), read by Ray's HTTP proxy "
        "(set by scripts.run_server); larger answers 431 `headers_too_large` as it arrives.",
    )
    content_filter_terms: CommaList = Field([], description="Comma-separated terms refused in prompts (case-insensitive words).")
    content_filter_patterns: str = Field("", description="JSON list of regular expressions refused in prompts.")
    content_filter_output_terms: CommaList = Field([], description="Comma-separated terms refused in model output.")
    content_filter_output_patterns: str = Field("", description="JSON list of regular expressions refused in model output.")
    content_filter_holdback_chars: int = Field(
        64, ge=1, description="With output patterns: streamed text held back until judged (a longer match may "
        "start to be sent before it is recognised). Output terms always hold back their own length.",
    )
    log_prompts: bool = Field(False, description="Log prompts and responses (truncated) in the access log.")
    log_prompt_chars: int = Field(200, ge=1, description="Characters of prompt/response kept when LOG_PROMPTS is on.")
    store_failure_mode: Literal["closed", "strict"] = Field(
        "closed",
        description="Redis unreachable: `closed` = stored keys answer 503, bootstrap keys keep working (unlimited); "
        "`strict` = every authenticated request answers 503.",
    )
    # Web clients
    cors_origins: CommaList = Field([], description="Comma-separated origins allowed by CORS (`*` for any); empty: CORS off.")
    cors_methods: CommaList = Field(["GET", "POST", "OPTIONS"], description="Comma-separated methods allowed by CORS.")
    cors_headers: CommaList = Field(
        ["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"], description="Comma-separated request headers CORS allows."
    )
    # WebSocket (WS /api/v1/ws): sockets before and after auth (docs/security.md#websockets-before-auth)
    ws_auth_frame_bytes: int = Field(
        4096, ge=64, description="Largest first message of a socket without a key in its handshake (it must be "
        "`auth`); checked on the raw frame before any parsing: larger, or another type, closes it (1008).",
    )
    ws_max_frame_bytes: int = Field(
        1_048_576, ge=1024, description="Largest WebSocket message (bytes), read from the environment by Ray's "
        "HTTP proxy too (uvicorn's `ws_max_size`, set by scripts.run_server): larger closes the socket (1009).",
    )
    ws_auth_timeout_s: float = Field(10, gt=0, description="An unauthenticated socket is closed after this long (1008).")
    ws_unauthenticated_per_address: int = Field(
        16, ge=1, description="Unauthenticated sockets one client address may hold at once, per ingress replica.",
    )
    ws_unauthenticated_total: int = Field(
        256, ge=1, description="Unauthenticated sockets at once per ingress replica; more are refused (1013).",
    )
    ws_auth_failures: int = Field(
        5, ge=0, description="Failed socket authentications (bad key, bad first message, timeout) one address may "
        "make in a minute before its new sockets are refused for WS_AUTH_BLOCK_S (counted in the shared store); "
        "0: never refused.",
    )
    ws_auth_block_s: float = Field(60, gt=0, description="How long an address over WS_AUTH_FAILURES is refused.")
    # Email / batch
    batch_max_items: int = Field(16, ge=1, description="Most items one POST /api/v1/generate/batch may carry.")
    batch_concurrency: int = Field(4, ge=1, description="Items of one batch generated at the same time.")
    # Asynchronous batch jobs: POST /api/v1/generate/batch/jobs (docs/integrations.md)
    batch_job_max_items: int = Field(1000, ge=1, description="Most items one batch job may carry.")
    batch_job_ttl_s: float = Field(
        86400, gt=0, description="A batch job and its results are kept this long after its last change."
    )
    batch_jobs_per_replica: int = Field(
        2, ge=1, description="Batch jobs one ingress replica runs at once; later ones wait `queued`."
    )
    batch_job_heartbeat_s: float = Field(
        5, gt=0, description="How often a replica running a job says so; 6 missed beats mark the job interrupted."
    )
    batch_jobs_per_key: int = Field(
        4, ge=1, description="Unfinished (queued or running) batch jobs one key may have; one more answers 429 "
        "`too_many_batch_jobs`.",
    )
    batch_job_result_bytes_per_key: int = Field(
        33_554_432, ge=1024, description="Bytes of batch job results one key may store per BATCH_JOB_TTL_S window: "
        "a submission past it answers 429 `batch_result_quota_exceeded`, a running job reaching it ends `failed`.",
    )
    # Telegram
    telegram_webhook_secret: str = Field("", description="X-Telegram-Bot-Api-Secret-Token expected; empty: webhook off.")
    telegram_api_key: str = Field(
        "", description="The managed API key the bot's generations run under (its scopes, models and limits apply); "
        "one of API_KEYS is refused at startup unless TELEGRAM_ALLOW_BOOTSTRAP_KEY=true.",
    )
    telegram_allow_bootstrap_key: bool = Field(
        False, description="Let TELEGRAM_API_KEY be a bootstrap key (admin, unlimited): a local trial without Redis only.",
    )
    telegram_chat_rpm: int = Field(10, ge=0, description="Messages one chat may have answered per minute; 0: unlimited.")
    telegram_allowed_chats: Annotated[list[int], NoDecode, BeforeValidator(_comma_separated)] = Field(
        [], description="Comma-separated chat ids the bot answers; empty: every chat.")
    telegram_bot_username: str = Field("", description="The bot's @username; commands addressed to other bots are ignored.")
    telegram_model: Optional[str] = Field(None, description="Model a chat starts with; default: DEFAULT_MODEL.")
    telegram_models: CommaList = Field([], description="Comma-separated models /model may pick; empty: every model.")
    telegram_max_tokens: int = Field(400, ge=1, description="Longest answer (tokens) the bot generates.")
    telegram_history_messages: int = Field(20, ge=2, description="Messages of a chat's history sent to the model.")
    telegram_history_ttl_s: float = Field(86400, gt=0, description="A chat's history is forgotten after this idle time.")

    @model_validator(mode="after")
    def _long_enough_keys(self) -> "Settings":
        short = [k for k in self.api_keys if len(k) < MIN_API_KEY_LENGTH]
        if short and not self.allow_short_api_keys:  # never echo a key
            raise ValueError(
                f"API_KEYS: {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters; use generated keys, "
                "e.g. $(python3 -c 'import secrets; print(secrets.token_hex(24))'), or set ALLOW_SHORT_API_KEYS=true"
            )
        return self

    @model_validator(mode="after")
    def _known_quota_timezone(self) -> "Settings":
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(self.quota_timezone)
        except (KeyError, ValueError, OSError):  # not found (a KeyError), or not a zone name at all
            raise ValueError(f"QUOTA_TIMEZONE: unknown time zone {self.quota_timezone!r} (an IANA name such as "
                             "UTC or Europe/Berlin)") from None
        return self

    @model_validator(mode="after")
    def _telegram_key_is_managed(self) -> "Settings":
        if self.telegram_api_key and self.telegram_api_key in self.api_keys and not self.telegram_allow_bootstrap_key:
            raise ValueError(
                "TELEGRAM_API_KEY is one of API_KEYS (admin, no limits): create a managed key for the bot "
                "(docs/integrations.md#telegram), or set TELEGRAM_ALLOW_BOOTSTRAP_KEY=true for a local trial"
            )
        return self

    @model_validator(mode="after")
    def _replicas_share_state(self) -> "Settings":
        if self.ingress_replicas > 1 and not self.redis_url and not self.allow_replicas_without_redis:
            raise ValueError(
                f"INGRESS_REPLICAS={self.ingress_replicas} needs REDIS_URL: without Redis each ingress replica keeps "
                "its own API keys, rate limits, cache and sessions (a key made through one replica is unknown to the "
                "others, and every limit is multiplied by the number of replicas). Set REDIS_URL (README, Several "
                "ingress replicas), or INGRESS_REPLICAS=1"
            )
        return self

    @model_validator(mode="after")
    def _debug_logs(self) -> "Settings":
        if self.debug:
            self.log_level = "DEBUG"
        return self

    def resolve(self, value: str) -> Path:
        """A relative path means the working directory if it exists there, else the project root."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return (PROJECT_ROOT / path).resolve()

