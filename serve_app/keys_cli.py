"""Command-line key management through the admin API (works with Redis or the in-memory store).

    python -m serve_app.keys_cli create --name telegram-bot --scopes inference --rpm 60
    python -m serve_app.keys_cli list
    python -m serve_app.keys_cli show KEY_ID | usage KEY_ID | rotate KEY_ID | revoke KEY_ID
    python -m serve_app.keys_cli update KEY_ID --disable --models smollm2-135m-instruct
    python -m serve_app.keys_cli web-token --models smollm2-135m-instruct --rpm 10 --tpm 5000 --ttl 3600
    python -m serve_app.keys_cli console-link --ttl 900

The server is AICORE_URL (default http://127.0.0.1:8000); the admin key is AICORE_ADMIN_KEY
(a bootstrap key from API_KEYS, or a managed key with the admin scope; `web-token` also takes a
key with the `tokens` scope). Prints JSON; `console-link` prints a link to the operator's console
(/admin) that logs in with a new short-lived admin key carried in the link's fragment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Optional

# The key's quota fields (serve_app/access/usage.py QUOTA_FIELDS), kept here: the CLI needs only the stdlib.
QUOTA_FIELDS = {"tokens-day": "daily_token_quota", "tokens-month": "monthly_token_quota",
                "requests-day": "daily_request_quota", "requests-month": "monthly_request_quota"}


def _call(base: str, admin_key: str, method: str, path: str, body: Optional[dict] = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base.rstrip("/") + "/api/v1/keys" + path, data=data, method=method,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _fields(args: argparse.Namespace) -> dict:
    fields = {
        "name": args.name, "owner": args.owner, "scopes": _csv(args.scopes), "models": _csv(args.models),
        "default_model": args.default_model, "rate_limit_per_minute": args.rpm, "tokens_per_minute": args.tpm,
        "ip_allowlist": _csv(args.ip_allowlist), "expires_at": args.expires_at,
        **{field: getattr(args, field) for field in QUOTA_FIELDS.values()},
    }
    if getattr(args, "expires_in_s", None) is not None:
        fields["expires_in_s"] = args.expires_in_s
    if args.enable or args.disable:
        fields["enabled"] = bool(args.enable)
    return {k: v for k, v in fields.items() if v is not None}


def _web_token_fields(args: argparse.Namespace) -> dict:
    fields = {"name": args.name, "models": _csv(args.models), "default_model": args.default_model,
              "rate_limit_per_minute": args.rpm, "tokens_per_minute": args.tpm,
              "ip_allowlist": _csv(args.ip_allowlist), "expires_in_s": args.ttl}
    return {k: v for k, v in fields.items() if v is not None}


LIST_PAGE = 200  # the API's largest page of keys
CONSOLE_LINK_TTL_S = 900
# The console link's key operates (`admin`) or, with --read-only, watches (`admin_read`); neither
# can run a model: the console needs no `inference`.
CONSOLE_LINK_SCOPES = {False: ["admin"], True: ["admin_read"]}


def _console_link(args: argparse.Namespace) -> int:
    """A new admin key that expires in --ttl seconds, in the fragment of a link to /admin: a browser
    never sends the fragment (so it stays out of proxy logs), and the page moves it to sessionStorage."""
    status, payload = _call(args.url, args.admin_key, "POST", "", {
        "name": args.name, "scopes": CONSOLE_LINK_SCOPES[args.read_only], "expires_in_s": args.ttl})
    if status >= 400:
        print(json.dumps(payload, indent=2), file=sys.stderr)
        return 1
    print(f"{args.url.rstrip('/')}/admin#token={payload['key']}")
    print(f"key {payload['id']} expires at {payload['expires_at']} (unix time); revoke it with "
          f"`python -m serve_app.keys_cli revoke {payload['id']}`", file=sys.stderr)
    return 0


def _list_all(args: argparse.Namespace) -> tuple[int, dict]:
    """Every key: the list is paged, so follow `has_more`."""
    keys: list = []
    after = ""
    while True:
        status, page = _call(args.url, args.admin_key, "GET", f"?limit={LIST_PAGE}{after}")
        if status >= 400:
            return status, page
        keys += page["data"]
        if not page.get("has_more"):
            return status, {"object": "list", "data": keys}
        after = f"&after={page['last_id']}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve_app.keys_cli", description="Manage AI Core API keys.")
    parser.add_argument("--url", default=os.environ.get("AICORE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--admin-key", default=os.environ.get("AICORE_ADMIN_KEY"),
                        help="default: $AICORE_ADMIN_KEY")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "update"):
        sub = commands.add_parser(name)
        if name == "update":
            sub.add_argument("id")
        sub.add_argument("--name", required=name == "create")
        sub.add_argument("--owner")
        sub.add_argument("--scopes", help="comma-separated: inference,admin,metrics,tokens")
        sub.add_argument("--models", help="comma-separated model names (default: all)")
        sub.add_argument("--default-model")
        sub.add_argument("--rpm", type=int, help="requests per minute (0: unlimited)")
        sub.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited)")
        for quota, field in QUOTA_FIELDS.items():  # --daily-token-quota ...
            sub.add_argument("--" + field.replace("_", "-"), type=int,
                             help=f"{quota.replace('-', ' per ')} in QUOTA_TIMEZONE (0: none)")
        sub.add_argument("--ip-allowlist", help="comma-separated CIDRs")
        sub.add_argument("--expires-at", type=int, help="unix time")
        if name == "create":
            sub.add_argument("--expires-in-s", type=int)
        sub.add_argument("--enable", action="store_true")
        sub.add_argument("--disable", action="store_true")
    web = commands.add_parser("web-token", help="mint a short-lived key for a public web page")
    web.add_argument("--models", required=True, help="comma-separated model names")
    web.add_argument("--name")
    web.add_argument("--default-model")
    web.add_argument("--rpm", type=int, help="requests per minute (default 20)")
    web.add_argument("--tpm", type=int, help="tokens per minute (default 20000)")
    web.add_argument("--ip-allowlist", help="comma-separated CIDRs")
    web.add_argument("--ttl", type=int, help="seconds until it expires (default 3600, at most 86400)")
    link = commands.add_parser("console-link", help="mint a short-lived admin key and print a link to /admin")
    link.add_argument("--ttl", type=int, default=CONSOLE_LINK_TTL_S, help="seconds until it expires (default 900)")
    link.add_argument("--name", default="console-link")
    link.add_argument("--read-only", action="store_true", help="an admin_read key: sees everything, changes nothing")
    commands.add_parser("list", help="every key (all pages)")
    for name in ("show", "usage", "rotate", "revoke"):
        commands.add_parser(name).add_argument("id")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not args.admin_key:
        print("an admin key is needed: --admin-key or AICORE_ADMIN_KEY", file=sys.stderr)
        return 2
    routes = {
        "create": lambda: ("POST", "", _fields(args)),
        "update": lambda: ("PATCH", f"/{args.id}", _fields(args)),
        "web-token": lambda: ("POST", "/web-tokens", _web_token_fields(args)),
        "show": lambda: ("GET", f"/{args.id}", None),
        "usage": lambda: ("GET", f"/{args.id}/usage", None),
        "rotate": lambda: ("POST", f"/{args.id}/rotate", None),
        "revoke": lambda: ("DELETE", f"/{args.id}", None),
    }
    try:
        if args.command == "console-link":
            return _console_link(args)
        if args.command == "list":
            status, payload = _list_all(args)
        else:
            method, path, body = routes[args.command]()
            status, payload = _call(args.url, args.admin_key, method, path, body)
    except (urllib.error.URLError, OSError) as error:
        print(f"cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2))
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
