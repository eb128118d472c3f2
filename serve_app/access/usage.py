"""Usage over time (per key and model, in time buckets) and per-key token and request quotas.

Buckets, on the shared store, each one hash with its own expiry (bounded by design):
  aicore:usage:m:<start>   minute buckets, kept a day after they close
  aicore:usage:h:<start>   hour buckets, kept 31 days
  aicore:usage:d:<start>   day buckets (UTC days), kept 400 days
with fields `<key id>|<model>|<counter>` (counters: requests, errors, prompt_tokens,
completion_tokens; model `-` for requests that named none). Reading every key for a range is one
HGETALL per bucket, pipelined. A web token writes under its minter's id (one a bootstrap key
minted, under `web-tokens`): thousands of short-lived tokens add no series.

Quotas: calendar days and months in QUOTA_TIMEZONE (a zoneinfo name, default UTC), counted in
  aicore:quota:<key id>:day:<YYYY-MM-DD>    fields requests, tokens
  aicore:quota:<key id>:month:<YYYY-MM>
each kept a day past its period's end. Every request a managed key got admitted counts (a web
token's under its minter), whether or not the key has quotas, so a quota set mid-month counts
the month so far. Admission refuses once a counter is at or over its quota: a request's tokens
are known only at its end, so the request that crosses a token quota runs whole, and requests
running at once may pass a request quota by at most their number.

The counters of every key, with quotas or not, are written by the one script that already
records a request's running totals at its end (`Store.hupdate_many`): a quota set later counts
the period so far at the next request, on any ingress replica. They are checked in the one script
that takes its rate limits. The buckets are summed in the ingress's memory and written once per
USAGE_FLUSH_S (serve_app/access/usage_buffer.py).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as day_time
from typing import Iterable, Optional
from zoneinfo import ZoneInfo

from core.errors import InvalidRequest
from serve_app.state.store import HashUpdate, QuotaCheck

COUNTERS = ("requests", "errors", "prompt_tokens", "completion_tokens")
NO_MODEL = "-"
WEB_TOKENS_OWNER = "web-tokens"  # whose usage the web tokens a bootstrap key minted count in
MAX_BUCKETS = 1500  # the most buckets one series read spans (a day of minutes is 1440)
PERIOD_KEEP_S = 86400  # a quota period's counters outlive its end by this much


@dataclass(frozen=True)
class Step:
    name: str
    code: str  # in the bucket's key
    seconds: int
    keep_s: int  # how long a bucket is kept after it closes


STEPS = {step.name: step for step in (
    Step("minute", "m", 60, 86400),
    Step("hour", "h", 3600, 31 * 86400),
    Step("day", "d", 86400, 400 * 86400),
)}


def bucket_start(step: Step, at: float) -> int:
    return int(at) - int(at) % step.seconds


def bucket_key(step: Step, start: int) -> str:
    return f"aicore:usage:{step.code}:{start}"


def bucket_updates(owner: str, model: Optional[str], counters: dict[str, int], now: float) -> list[HashUpdate]:
    """The increments of one request's usage in the minute, hour and day bucket it ended in."""
    increments = {f"{owner}|{model or NO_MODEL}|{name}": amount for name, amount in counters.items() if amount}
    if not increments:
        return []
    updates = []
    for step in STEPS.values():
        start = bucket_start(step, now)
        updates.append((bucket_key(step, start), increments, {}, start + step.seconds + step.keep_s - now))
    return updates


# -- quotas ---------------------------------------------------------------------------------
QUOTA_FIELDS = {  # a quota's name (in headers, errors and the usage API) -> the key's field
    "tokens-day": "daily_token_quota",
    "tokens-month": "monthly_token_quota",
    "requests-day": "daily_request_quota",
    "requests-month": "monthly_request_quota",
}


@dataclass(frozen=True)
class Quota:
    name: str  # a key of QUOTA_FIELDS
    limit: int

    @property
    def counter(self) -> str:  # "tokens" or "requests"
        return self.name.split("-")[0]

    @property
    def period(self) -> str:  # "day" or "month"
        return self.name.split("-")[1]

    def title(self) -> str:
        return f"{'Daily' if self.period == 'day' else 'Monthly'} {self.counter[:-1]} quota"


def quotas_of(fields: object) -> tuple[Quota, ...]:
    """The quotas a key record (or a dict of its quota fields) sets: null and 0 set none."""
    get = fields.get if isinstance(fields, dict) else lambda name: getattr(fields, name, None)
    return tuple(Quota(name, get(field)) for name, field in QUOTA_FIELDS.items() if get(field))


def quota_fields(quotas: Iterable[Quota]) -> dict[str, int]:
    return {QUOTA_FIELDS[q.name]: q.limit for q in quotas}


@dataclass(frozen=True)
class QuotaState:
    """One quota at admission: its store check, and when its period resets (epoch s)."""

    quota: Quota
    check: QuotaCheck
    resets_at: float


class QuotaClock:
    """Calendar days and months in one time zone."""

    def __init__(self, timezone: str = "UTC"):
        self.zone = ZoneInfo(timezone)

    def period(self, period: str, now: float) -> tuple[str, float]:
        """The period's label (`2026-12-07`, `2026-12`) and when it ends (epoch s)."""
        local = datetime.fromtimestamp(now, self.zone).date()
        if period == "day":
            label, following = local.isoformat(), local + timedelta(days=1)
        else:
            label = f"{local.year:04d}-{local.month:02d}"
            following = date(local.year + local.month // 12, local.month % 12 + 1, 1)
        return label, datetime.combine(following, day_time(0), tzinfo=self.zone).timestamp()

    @staticmethod
    def counter_key(owner: str, period: str, label: str) -> str:
        return f"aicore:quota:{owner}:{period}:{label}"

    def counter_updates(self, owner: str, tokens: int, now: float) -> list[HashUpdate]:
        """One admitted request and its tokens, counted in the owner's current day and month."""
        updates = []
        for period in ("day", "month"):
            label, ends = self.period(period, now)
            increments = {"requests": 1, **({"tokens": tokens} if tokens else {})}
            updates.append((self.counter_key(owner, period, label), increments, {}, ends - now + PERIOD_KEEP_S))
        return updates

    def states(self, owner: str, quotas: Iterable[Quota], now: float) -> list[QuotaState]:
        states = []
        for quota in quotas:
            label, ends = self.period(quota.period, now)
            states.append(QuotaState(quota, (self.counter_key(owner, quota.period, label), quota.counter, quota.limit),
                                     ends))
        return states

    def iso(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.zone).isoformat()


def duration_text(seconds: float) -> str:
    """The rate-limit headers' duration format, with hours: `59s`, `6m0s`, `13h2m5s`."""
    whole = max(1, math.ceil(seconds))
    if whole < 3600:
        return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60}s"
    return f"{whole // 3600}h{whole % 3600 // 60}m{whole % 60}s"


def quota_headers(states: list[QuotaState], used: list[int], now: float) -> dict[str, str]:
    headers = {}
    for state, count in zip(states, used):
        name = state.quota.name
        headers[f"x-quota-limit-{name}"] = str(state.quota.limit)
        headers[f"x-quota-remaining-{name}"] = str(max(0, state.quota.limit - count))
        headers[f"x-quota-reset-{name}"] = duration_text(state.resets_at - now)
    return headers


# -- series ---------------------------------------------------------------------------------
def bucket_starts(step: Step, start: int, end: int) -> list[int]:
    """The buckets of [start, end): 400 for an empty range or one over MAX_BUCKETS."""
    if end <= start:
        raise InvalidRequest("end must be after start", param="end")
    first = bucket_start(step, start)
    count = math.ceil((end - first) / step.seconds)
    if count > MAX_BUCKETS:
        raise InvalidRequest(f"the range spans {count} {step.name} buckets, more than {MAX_BUCKETS}: use a larger "
                             "step or a shorter range", param="step")
    return [first + i * step.seconds for i in range(count)]


def series_rows(starts: list[int], hashes: list[dict[str, str]], key_id: Optional[str] = None,
                model: Optional[str] = None) -> list[dict]:
    """Non-empty rows (one per bucket, key and model), sorted by time, key and model."""
    rows = []
    for start, fields in zip(starts, hashes):
        grouped: dict[tuple[str, str], dict] = {}
        for name, value in fields.items():
            owner, rest = name.split("|", 1)
            used_model, counter = rest.rsplit("|", 1)
            if (key_id and owner != key_id) or (model and used_model != model) or counter not in COUNTERS:
                continue
            row = grouped.setdefault((owner, used_model), {"time": start, "key_id": owner, "model": used_model,
                                                            **dict.fromkeys(COUNTERS, 0)})
            row[counter] += int(value)
        rows.extend(grouped[group] for group in sorted(grouped))
    return rows


CSV_COLUMNS = ("time", "key_id", "model", *COUNTERS)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell a spreadsheet never runs as a formula: text starting with = + - @ (or a tab or
    carriage return) gets a leading `'`. Numbers are ours and never negative."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def series_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(row[column]) for column in CSV_COLUMNS])
    return out.getvalue()
