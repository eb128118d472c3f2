"""Move an instance's state to another: model configuration, API keys (as hashes), usage, chat sessions,
the Telegram bot's chats, the audit log.

    python -m serve_app.migrate export --redis redis://old:6379/0 --models models.json -o aicore-export.json
    python -m serve_app.migrate import aicore-export.json --redis redis://new:6379/0 --models-out models.json --dry-run
    python -m serve_app.migrate import aicore-export.json --redis redis://new:6379/0 --models-out models.json
    python -m serve_app.migrate import-legacy --keys keys.csv --history chats.jsonl [--apply]

The file is versioned JSON. Keys travel as their SHA-256 records (the keys themselves are never
stored anywhere), so the same keys authenticate on the new instance. The audit log's three streams travel
with their entry ids (so times and `before` cursors stay as they were). Import refuses to overwrite
anything that exists unless `--force`; `--dry-run` only reports. Response-cache entries and
rate-limit windows are transient and are not moved. State lives in Redis: an instance without
REDIS_URL keeps keys and sessions in its process memory, which no tool can read from outside.
`import-legacy` reads an older system's keys and chat histories (serve_app/legacy_import.py);
without `--apply` it only checks and reports. REDIS_PASSWORD applies to every `--redis` URL.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

FORMAT, VERSION = "aicore-migration", 1
# What is moved, and the Redis type each must have: key records, hash index, id set, usage
# counters, sessions and their per-key index, Telegram chats, the audit log's streams (actions,
# web-token mints, refused attempts). Import writes nothing else.
KINDS = {"aicore:key:*": "string", "aicore:keyhash:*": "string", "aicore:keys": "set", "aicore:usage:*": "hash",
         "session:*": "string", "sessions:*": "set", "aicore:telegram:chat:*": "string",
         "aicore:audit": "stream", "aicore:audit:tokens": "stream", "aicore:audit:refused": "stream"}
STREAM_ID = re.compile(r"[0-9]{1,15}-[0-9]{1,19}")
PATTERNS = tuple(KINDS)


def expected_kind(name: str) -> Optional[str]:
    """The Redis type an exported entry named `name` must have; None: not ours to import."""
    for pattern, kind in KINDS.items():
        if fnmatch.fnmatchcase(name, pattern):
            return kind
    return None


def _client(url: str):
    import redis

    from core.settings import Settings

    return redis.Redis.from_url(url, password=Settings().redis_password, decode_responses=True,
                                socket_timeout=5, socket_connect_timeout=5)


def export_state(redis_url: str, models_path: Optional[Path]) -> dict:
    client = _client(redis_url)
    entries = []
    for pattern in PATTERNS:
        for name in sorted(client.scan_iter(match=pattern, count=500)):
            kind = client.type(name)
            if kind != KINDS[pattern]:  # not one of ours: import would refuse it
                continue
            value = {"string": client.get, "hash": client.hgetall, "set": lambda n: sorted(client.smembers(n)),
                     "stream": lambda n: [[entry_id, fields] for entry_id, fields in client.xrange(n)]}[kind]
            ttl_ms = client.pttl(name)
            entries.append({"key": name, "type": kind, "value": value(name), "ttl_ms": ttl_ms if ttl_ms > 0 else None})
    models = json.loads(models_path.read_text()) if models_path else None
    return {"format": FORMAT, "version": VERSION, "exported_at": int(time.time()), "models": models,
            "entries": entries}


def _check(data: dict) -> None:
    if data.get("format") != FORMAT:
        raise ValueError(f"not an AI Core export (format {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"export version {data.get('version')!r} is not supported (this tool reads {VERSION})")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise ValueError("the export has no list of entries")
    for index, entry in enumerate(entries):  # all checked before anything is written
        name = entry.get("key") if isinstance(entry, dict) else None
        kind = expected_kind(name) if isinstance(name, str) else None
        if kind is None:
            raise ValueError(f"entry {index} ({name!r}) is not an AI Core key, key index, usage, session, "
                             "Telegram chat record or audit log")
        if entry.get("type") != kind or not _value_fits(kind, entry.get("value")):
            raise ValueError(f"entry {index} ({name!r}) must be a Redis {kind}")
        ttl = entry.get("ttl_ms")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise ValueError(f"entry {index} ({name!r}) has a bad ttl_ms {ttl!r}")


def _value_fits(kind: str, value) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "hash":
        return _str_dict(value)
    if kind == "stream":  # [[id, fields], ...] with ids rising, as XADD takes them
        if not isinstance(value, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and STREAM_ID.fullmatch(e[0])
                and _str_dict(e[1]) and e[1] for e in value):
            return False
        ids = [tuple(int(part) for part in e[0].split("-")) for e in value]
        return all(a < b for a, b in zip(ids, ids[1:]))
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _str_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def write_private(path: Path, text: str, overwrite: bool) -> None:
    """Create `path` readable by its owner only (0600, whatever the umask); an existing file is
    replaced only with `overwrite`, and made 0600 too before anything is written into it."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            fd = -1
            f.write(text)
    finally:
        if fd != -1:
            os.close(fd)


def import_state(data: dict, redis_url: str, models_out: Optional[Path], dry_run: bool, force: bool) -> dict:
    """Returns a report; raises FileExistsError when something exists and `force` is not set."""
    _check(data)
    client = _client(redis_url)
    existing = [e["key"] for e in data["entries"] if client.exists(e["key"])]
    if models_out is not None and data.get("models") is not None and models_out.exists():
        existing.append(str(models_out))
    report = {"entries": len(data["entries"]), "existing": existing, "written": 0, "dry_run": dry_run}
    if existing and not force:
        raise FileExistsError(f"{len(existing)} targets exist already (first: {existing[0]}); use --force")
    if dry_run:
        return report
    for entry in data["entries"]:
        name, kind, value = entry["key"], entry["type"], entry["value"]
        pipe = client.pipeline(transaction=True)
        pipe.delete(name)
        if kind == "string":
            pipe.set(name, value)
        elif kind == "hash" and value:
            pipe.hset(name, mapping=value)
        elif kind == "set" and value:
            pipe.sadd(name, *value)
        elif kind == "stream":
            for entry_id, fields in value:
                pipe.xadd(name, fields, id=entry_id)
        if entry.get("ttl_ms"):
            pipe.pexpire(name, entry["ttl_ms"])
        pipe.execute()
        report["written"] += 1
    client.delete("aicore:keys:order:ready")  # the key list's order is rebuilt with the imported keys
    if models_out is not None and data.get("models") is not None:
        models_out.write_text(json.dumps(data["models"], indent=2) + "\n")
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.migrate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write this instance's state to a JSON file")
    ex.add_argument("--redis", required=True, help="REDIS_URL of the instance to export")
    ex.add_argument("--models", type=Path, help="its models.json")
    ex.add_argument("-o", "--output", type=Path, required=True)
    ex.add_argument("--force", action="store_true", help="overwrite the output file")
    im = sub.add_parser("import", help="load an export into another instance")
    im.add_argument("file", type=Path)
    im.add_argument("--redis", required=True, help="REDIS_URL of the instance to fill")
    im.add_argument("--models-out", type=Path, help="where to write the exported models.json")
    im.add_argument("--dry-run", action="store_true", help="report what would happen, write nothing")
    im.add_argument("--force", action="store_true", help="overwrite keys, sessions and files that exist")
    legacy = sub.add_parser("import-legacy", help="load an older system's keys (CSV/JSON) and chat histories "
                            "(JSON lines); a dry run unless --apply (docs/migration.md)")
    legacy.add_argument("--keys", type=Path, help="plaintext keys: .csv with a header row, or .json")
    legacy.add_argument("--history", type=Path, help="chat messages, one JSON object per line")
    legacy.add_argument("--redis", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    legacy.add_argument("--models", type=Path, help="the server's models.json (default: $MODEL_CONFIG_PATH)")
    legacy.add_argument("--owner-key", default=os.environ.get("LEGACY_OWNER_KEY"),
                        help="key owning conversations that name none (default: $LEGACY_OWNER_KEY)")
    legacy.add_argument("--apply", action="store_true", help="write; without it nothing is written")
    args = parser.parse_args(argv)
    try:
        if args.command == "import-legacy":
            from serve_app.legacy_import import run

            if not args.redis or not (args.keys or args.history):
                raise ValueError("import-legacy needs --redis (or REDIS_URL) and --keys and/or --history")
            print(json.dumps(run(args.keys, args.history, args.redis, args.models, args.owner_key, args.apply)))
        elif args.command == "export":
            if args.output.exists() and not args.force:
                raise FileExistsError(f"{args.output} exists; use --force")
            data = export_state(args.redis, args.models)
            write_private(args.output, json.dumps(data, indent=1), overwrite=args.force)
            print(f"exported {len(data['entries'])} entries to {args.output}")
        else:
            report = import_state(json.loads(args.file.read_text()), args.redis, args.models_out,
                                  args.dry_run, args.force)
            print(json.dumps(report))
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
