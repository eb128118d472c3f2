"""Wire types of the key-management API (`/api/v1/keys`)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from core.netguard import parse_networks
from serve_app.protocol.common import Int, NonNegativeInt, PositiveInt, integral, model_names

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# What the schema promises is accepted: IPv4 addresses and networks, IPv6 addresses. The server
# also takes IPv6 networks ("2001:db8::/32") and IPv4 netmasks; anything else is a 400.
NETWORK_SCHEMA = {"anyOf": [{"type": "string", "pattern": rf"^{_OCTET}(\.{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?$"},
                            {"type": "string", "format": "ipv6"}]}
_NETWORKS = {"items": NETWORK_SCHEMA}

Scope = Literal["inference", "admin", "admin_read", "metrics", "tokens"]
SCOPES_DESCRIPTION = ("`inference`, `admin`, `admin_read` (read-only administration: sees keys, usage, every key's "
                      "batch jobs and the audit log; changes nothing), `metrics` (read /api/v1/metrics only) and/or "
                      "`tokens` (mint web tokens only, each within this key's own models and limits: a public site's "
                      "backend).")
Priority = Literal["interactive", "batch"]
PRIORITY_DESCRIPTION = ("Priority of the key's requests that name none: `batch` (bulk work such as the email "
                        "bot's) waits behind `interactive` requests and never takes their reserved slots.")


KEY_EXAMPLE = {
    "id": "key-7f3a9c2e51d04b86", "object": "api_key", "name": "telegram-bot", "owner": "ops@example.com",
    "key_prefix": "aic-4kq3", "scopes": ["inference"], "models": ["smollm2-135m-instruct"], "default_model": None,
    "priority": "interactive", "rate_limit_per_minute": 60, "tokens_per_minute": 20000, "ip_allowlist": ["203.0.113.0/24"],
    "expires_at": 1803089057, "enabled": True, "created_at": 1795313057, "revoked_at": None, "web_token": False,
}
QUOTA_DESCRIPTION = ("{0} per calendar {1} in QUOTA_TIMEZONE (prompt plus completion tokens; requests admitted); "
                     "once used up, requests answer 429 `quota_exceeded` until the {1} ends. Null or 0: none. "
                     "The key's web tokens count against it.")
WEB_TOKEN_DEFAULT_TTL_S = 3600
WEB_TOKEN_MAX_TTL_S = 86400


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)

    @field_validator("ip_allowlist", check_fields=False)
    @classmethod
    def _cidrs(cls, value):
        if value is not None:
            parse_networks(value)
        return value


class KeyCreate(_KeyFields):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "telegram-bot", "owner": "ops@example.com", "scopes": ["inference"],
         "models": ["smollm2-135m-instruct"], "rate_limit_per_minute": 60, "tokens_per_minute": 20000,
         "ip_allowlist": ["203.0.113.0/24"], "expires_in_s": 7776000},
    ]})

    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. 'telegram-bot'.")
    owner: Optional[str] = Field(None, max_length=100, description="Who is responsible for it.")
    scopes: list[Scope] = Field(["inference"], min_length=1, description=SCOPES_DESCRIPTION)
    models: Optional[list[str]] = Field(None, description="Models the key may use; omitted: all.",
                                        json_schema_extra=model_names("any"))
    default_model: Optional[str] = Field(None, description="Model used when a request names none (one of `models` "
                                         "when both are given).", json_schema_extra=model_names("any"))
    priority: Priority = Field("interactive", description=PRIORITY_DESCRIPTION)
    rate_limit_per_minute: Optional[NonNegativeInt] = Field(None, description="Requests per minute; omitted: RATE_LIMIT_PER_MINUTE; 0: unlimited.")
    tokens_per_minute: Optional[NonNegativeInt] = Field(None, description="Tokens per minute; omitted: TOKENS_PER_MINUTE; 0: unlimited.")
    ip_allowlist: list[str] = Field([], description="CIDRs (IPv4/IPv6) the key may be used from; empty: anywhere.",
                                    json_schema_extra=_NETWORKS)
    expires_at: Optional[Int] = Field(None, description="Unix time after which the key stops working.")
    expires_in_s: Optional[PositiveInt] = Field(None, description="Alternative to expires_at: seconds from now.")
    enabled: bool = True
    daily_token_quota: Optional[NonNegativeInt] = Field(None, description=QUOTA_DESCRIPTION.format("Tokens", "day"))
    monthly_token_quota: Optional[NonNegativeInt] = Field(None, description=QUOTA_DESCRIPTION.format("Tokens", "month"))
    daily_request_quota: Optional[NonNegativeInt] = Field(None, description=QUOTA_DESCRIPTION.format("Requests", "day"))
    monthly_request_quota: Optional[NonNegativeInt] = Field(None, description=QUOTA_DESCRIPTION.format("Requests", "month"))


class KeyUpdate(_KeyFields):
    """Only the fields sent are changed; `null` clears an optional field."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rate_limit_per_minute": 120, "models": None},
        {"enabled": False},
    ]})

    # Fields a key always has take no null (omitted: unchanged); the others take null to clear them.
    name: str = Field(None, min_length=1, max_length=100)
    owner: Optional[str] = Field(None, max_length=100)
    scopes: list[Scope] = Field(None, min_length=1)
    models: Optional[list[str]] = Field(None, json_schema_extra=model_names("any"))
    default_model: Optional[str] = Field(None, json_schema_extra=model_names("any"))
    priority: Priority = Field(None, description=PRIORITY_DESCRIPTION)
    rate_limit_per_minute: Optional[NonNegativeInt] = None
    tokens_per_minute: Optional[NonNegativeInt] = None
    ip_allowlist: list[str] = Field(None, json_schema_extra=_NETWORKS)
    expires_at: Optional[Int] = None
    enabled: bool = None
    daily_token_quota: Optional[NonNegativeInt] = None
    monthly_token_quota: Optional[NonNegativeInt] = None
    daily_request_quota: Optional[NonNegativeInt] = None
    monthly_request_quota: Optional[NonNegativeInt] = None


class KeyView(BaseModel):
    """A key as stored, without its secret (only its first characters, to recognise it)."""

    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [KEY_EXAMPLE]})

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    owner: Optional[str] = None
    key_prefix: str
    scopes: list[Scope]
    models: Optional[list[str]] = None
    default_model: Optional[str] = None
    priority: Priority = "interactive"
    rate_limit_per_minute: Optional[int] = None
    tokens_per_minute: Optional[int] = None
    ip_allowlist: list[str] = []
    expires_at: Optional[int] = None
    enabled: bool = True
    created_at: int
    revoked_at: Optional[int] = None
    web_token: bool = Field(False, description="Minted by POST /api/v1/keys/web-tokens for a public web page: "
                            "`inference` scope only, named models, its own limits, a short expiry.")
    minted_by: Optional[str] = Field(None, description="A web token's minter: the id of the key that minted it.")
    daily_token_quota: Optional[int] = None
    monthly_token_quota: Optional[int] = None
    daily_request_quota: Optional[int] = None
    monthly_request_quota: Optional[int] = None


class KeyCreated(KeyView):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {**KEY_EXAMPLE, "key": "aic-4kq3Jd9sL0pXw2Rz7NcV5bTg8hYe1uMfQa6WkD3xZ0E"},
    ]})

    key: str = Field(description="The secret: shown only in this response.")


class WebTokenCreate(_KeyFields):
    """A short-lived key for a public web page: inference only, on the models named, with limits.
    A managed minter's token stays within the minter's own models, limits, expiry and priority."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "docs-site-chat", "models": ["smollm2-135m-instruct"], "rate_limit_per_minute": 10,
         "tokens_per_minute": 5000, "expires_in_s": 3600},
    ]})

    name: str = Field("web-token", min_length=1, max_length=100, description="What the token is for.")
    owner: Optional[str] = Field(None, max_length=100, description="Who is responsible for it.")
    models: list[str] = Field(min_length=1, description="The models the token may use (at least one; of the "
                              "minter's own models).",
                              json_schema_extra=model_names("any"))
    default_model: Optional[str] = Field(None, description="Model used when a request names none; one of models.",
                                         json_schema_extra=model_names("any"))
    rate_limit_per_minute: PositiveInt = Field(20, description="Requests per minute (a web token is always limited); "
                                               "at most the minter's own (omitted: 20, or the minter's if lower).")
    tokens_per_minute: PositiveInt = Field(20000, description="Prompt plus completion tokens per minute; at most the "
                                           "minter's own (omitted: 20000, or the minter's if lower).")
    ip_allowlist: list[str] = Field([], description="CIDRs the token may be used from; empty: anywhere.",
                                    json_schema_extra=_NETWORKS)
    expires_in_s: Annotated[int, Field(ge=1, le=WEB_TOKEN_MAX_TTL_S), BeforeValidator(integral)] = Field(
        WEB_TOKEN_DEFAULT_TTL_S, description="Seconds until the token stops working (at most a day; never after "
        "its minter expires).")

    def as_key(self) -> KeyCreate:
        return KeyCreate(scopes=["inference"], **self.model_dump())


KEY_LIST_LIMIT_DEFAULT = 50  # keys on a page of GET /api/v1/keys when the caller names no limit
KEY_LIST_LIMIT_MAX = 200


class KeyList(BaseModel):
    """A page of keys in the order they were made (OpenAI's list object, as the batch jobs list)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "object": "list", "data": [KEY_EXAMPLE], "first_id": KEY_EXAMPLE["id"], "last_id": KEY_EXAMPLE["id"],
        "has_more": False,
    }]})

    object: Literal["list"] = "list"
    data: list[KeyView]
    first_id: Optional[str] = None
    last_id: Optional[str] = Field(None, description="Pass as `after` for the next page.")
    has_more: bool = Field(False, description="More keys match after `last_id`.")


class QuotaUsage(BaseModel):
    name: Literal["tokens-day", "tokens-month", "requests-day", "requests-month"]
    limit: int
    used: int = Field(description="Used in the current period (a web token's: its minter's, shared).")
    resets_at: int = Field(description="Unix time the period ends (calendar day or month in QUOTA_TIMEZONE).")


class KeyUsage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "key-7f3a9c2e51d04b86", "object": "api_key.usage", "requests": 1520, "errors": 12,
         "prompt_tokens": 48210,
         "completion_tokens": 61877, "total_tokens": 110087, "last_used_at": 1795313057,
         "quotas": [{"name": "tokens-day", "limit": 200000, "used": 18250, "resets_at": 1795392000}]},
    ]})

    id: str
    object: Literal["api_key.usage"] = "api_key.usage"
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    last_used_at: Optional[int] = None
    quotas: list[QuotaUsage] = Field([], description="The key's quotas (a web token's: its minter's) and their use.")


UsageStep = Literal["minute", "hour", "day"]


class UsageRow(BaseModel):
    time: int = Field(description="The bucket's start (unix s; day buckets are UTC days).")
    key_id: str = Field(description="The key (a web token's usage counts under its minter).")
    model: str = Field(description="The model the requests were for; `-` for requests that named none.")
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UsageSeries(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [
        {"object": "list", "step": "hour", "start": 1795309200, "end": 1795316400, "data": [
            {"time": 1795309200, "key_id": "key-7f3a9c2e51d04b86", "model": "smollm2-135m-instruct",
             "requests": 41, "errors": 1, "prompt_tokens": 5120, "completion_tokens": 8044}]},
    ]})

    object: Literal["list"] = "list"
    step: UsageStep
    start: int
    end: int
    data: list[UsageRow] = Field(description="Non-empty buckets only, sorted by time, key and model.")


class KeySelf(BaseModel):
    """The key presenting the request, as it stands: what it may do, never its secret or hash."""

    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [{
        "id": "key-7f3a9c2e51d04b86", "object": "api_key.self", "name": "ops-watcher", "bootstrap": False,
        "web_token": False, "minted_by": None, "scopes": ["admin_read"], "models": None, "default_model": None,
        "priority": "interactive", "rate_limit_per_minute": 60, "tokens_per_minute": 0, "expires_at": None,
        "quotas": [{"name": "tokens-day", "limit": 100000, "used": 5120, "resets_at": 1796169600}],
    }]})

    id: str
    object: Literal["api_key.self"] = "api_key.self"
    name: Optional[str] = Field(None, description="`API_KEYS` for a bootstrap key.")
    bootstrap: bool = Field(False, description="A bootstrap key (API_KEYS): every scope, no limits.")
    web_token: bool = False
    minted_by: Optional[str] = Field(None, description="A web token's minter.")
    scopes: list[Scope]
    models: Optional[list[str]] = Field(None, description="Models the key may use; null: all.")
    default_model: Optional[str] = None
    priority: Priority = "interactive"
    rate_limit_per_minute: int = Field(description="Requests per minute in effect (the key's or the default); "
                                       "0: unlimited.")
    tokens_per_minute: int = Field(description="Tokens per minute in effect; 0: unlimited.")
    expires_at: Optional[int] = None
    quotas: list[QuotaUsage] = Field([], description="Its quotas (a web token's: its minter's, shared) and their "
                                     "use in the current period.")
