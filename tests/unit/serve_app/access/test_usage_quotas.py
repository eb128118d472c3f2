"""Usage buckets, the series read and its CSV, quota periods and quota refusals, on every store
(memory, the shared hub, and a real Redis when AICORE_TEST_REDIS_URL is set)."""

import asyncio
import csv
import io
import secrets
import time
from datetime import datetime, timezone

import pytest

from core.errors import InvalidRequest, QuotaExceeded
from serve_app.access.auth import Principal
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.access.usage import (
    MAX_BUCKETS,
    STEPS,
    WEB_TOKENS_OWNER,
    Quota,
    QuotaClock,
    bucket_key,
    bucket_start,
    bucket_starts,
    csv_cell,
    duration_text,
    series_csv,
)
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.protocol.keys import KeyCreate, KeyUpdate
from tests.unit.stores import store_params


@pytest.fixture(params=list(store_params()))
def store(request):  # memory, the shared hub, and a real Redis when available
    return request.param()


def run(coro):
    return asyncio.run(coro)


def utc(*parts) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


def unique(prefix: str = "key") -> str:
    return f"{prefix}-unit-{secrets.token_hex(6)}"


# -- pure logic ------------------------------------------------------------------------------
def test_bucket_starts_cover_the_range_and_refuse_too_many():
    hour = STEPS["hour"]
    start = int(utc(2026, 12, 7, 10, 30))
    assert bucket_starts(hour, start, start + 2 * 3600) == [int(utc(2026, 12, 7, 10)), int(utc(2026, 12, 7, 11)),
                                                             int(utc(2026, 12, 7, 12))]
    assert bucket_start(STEPS["day"], start) == int(utc(2026, 12, 7))
    assert len(bucket_starts(STEPS["minute"], start, start + MAX_BUCKETS * 60)) <= MAX_BUCKETS + 1
    with pytest.raises(InvalidRequest) as caught:
        bucket_starts(STEPS["minute"], start, start + 2 * MAX_BUCKETS * 60)
    assert caught.value.param == "step" and str(MAX_BUCKETS) in caught.value.message
    with pytest.raises(InvalidRequest):
        bucket_starts(hour, start, start)


def test_quota_periods_are_calendar_days_and_months_in_the_time_zone():
    clock = QuotaClock("UTC")
    noon = utc(2026, 12, 7, 12)
    assert clock.period("day", noon) == ("2026-12-07", utc(2026, 12, 8))
    assert clock.period("month", noon) == ("2026-12", utc(2027, 1, 1))  # December rolls into the next year
    assert clock.period("month", utc(2026, 2, 28, 23)) == ("2026-02", utc(2026, 3, 1))
    berlin = QuotaClock("Europe/Berlin")
    late = utc(2026, 12, 7, 23, 30)  # 00:30 on the 8th in Berlin (UTC+1)
    assert berlin.period("day", late) == ("2026-12-08", utc(2026, 12, 8, 23))
    spring = utc(2026, 3, 29, 12)  # Berlin's clocks go forward that night: a day of 23 hours
    label, ends = berlin.period("day", spring)
    assert label == "2026-03-29" and ends - utc(2026, 3, 28, 23) == 23 * 3600
    assert berlin.iso(ends).startswith("2026-03-30T00:00:00+02:00")


def test_durations_and_csv_cells():
    assert duration_text(0.3) == "1s" and duration_text(61) == "1m1s" and duration_text(3600 * 13 + 125) == "13h2m5s"
    for text in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "-"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("smollm2") == "smollm2" and csv_cell(42) == "42"
    rows = [{"time": 60, "key_id": "key-1", "model": "=HYPERLINK(\"x\")", "requests": 2, "errors": 0,
             "prompt_tokens": 3, "completion_tokens": 4}]
    parsed = list(csv.reader(io.StringIO(series_csv(rows))))
    assert parsed[0] == ["time", "key_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens"]
    assert parsed[1] == ["60", "key-1", "'=HYPERLINK(\"x\")", "2", "0", "3", "4"]


# -- on every store --------------------------------------------------------------------------
def test_usage_lands_in_minute_hour_and_day_buckets_per_key_and_model(store):
    async def scenario():
        keys = KeyService(store, {"m1", "m2"})
        key, other = unique(), unique()
        await keys.record_usage(key, 200, 10, 5, model="m1", admitted=True)
        await keys.record_usage(key, 500, 3, 0, model="m1", admitted=True)
        await keys.record_usage(key, 200, 1, 1, model="m2", admitted=True)
        await keys.record_usage(other, 200, 7, 7, admitted=True)  # named no model
        now = int(time.time())
        for step in STEPS:
            rows = await keys.series(step, now - 120, now + 1, key_id=key)
            by_model = {row["model"]: row for row in rows}
            assert set(by_model) == {"m1", "m2"}, (step, rows)
            assert by_model["m1"] == {"time": by_model["m1"]["time"], "key_id": key, "model": "m1", "requests": 2,
                                      "errors": 1, "prompt_tokens": 13, "completion_tokens": 5}
            assert by_model["m1"]["time"] == bucket_start(STEPS[step], by_model["m1"]["time"])
        only_m2 = await keys.series("hour", now - 60, now + 1, key_id=key, model="m2")
        assert [(r["model"], r["requests"]) for r in only_m2] == [("m2", 1)]
        everyone = await keys.series("minute", now - 120, now + 1)
        assert {(r["key_id"], r["model"]) for r in everyone} >= {(key, "m1"), (key, "m2"), (other, "-")}
        assert everyone == sorted(everyone, key=lambda r: (r["time"], r["key_id"], r["model"]))
        # each bucket expires its retention after it closes, set once (a later write keeps it)
        minute = bucket_key(STEPS["minute"], bucket_start(STEPS["minute"], now))
        day = bucket_key(STEPS["day"], bucket_start(STEPS["day"], now))
        minute_ttl, day_ttl = await store.ttl(minute), await store.ttl(day)
        assert 86400 - 5 < minute_ttl <= 86400 + 60
        assert 400 * 86400 - 5 < day_ttl <= 401 * 86400
        await asyncio.sleep(1.1)
        await keys.record_usage(key, 200, 1, 1, model="m1")
        assert await store.ttl(day) < day_ttl
    run(scenario())


def test_quota_refuses_at_the_limit_with_headers_and_counts_no_rate_window(store):
    async def scenario():
        clock = QuotaClock("UTC")
        keys, limiter = KeyService(store, set(), clock=clock), RateLimiter(store, 0, 0, clock)
        key = unique()
        quotas = [Quota("tokens-day", 100), Quota("requests-month", 3)]
        limits = limiter.limits(10, None)
        first = await limiter.admit(key, limits, quotas=clock.states(key, quotas, time.time()))
        assert first.headers["x-quota-limit-tokens-day"] == "100"
        assert first.headers["x-quota-remaining-tokens-day"] == "100"
        assert first.headers["x-quota-remaining-requests-month"] == "3"
        assert first.headers["x-quota-reset-tokens-day"].endswith("s")
        assert first.headers["x-ratelimit-remaining-requests"] == "9"
        await keys.record_usage(key, 200, 60, 50, admitted=True)  # 110 tokens: over, known only at the end
        with pytest.raises(QuotaExceeded) as caught:
            await limiter.admit(key, limits, quotas=clock.states(key, quotas, time.time()))
        error = caught.value
        assert (error.status, error.type, error.code, error.param) == (429, "quota", "quota_exceeded", "tokens-day")
        assert "Daily token quota of key" in error.message and "limit 100, used 110" in error.message
        _, reset_at = clock.period("day", time.time())
        assert 0 < int(error.headers["Retry-After"]) <= reset_at - time.time() + 1
        assert error.headers["x-quota-remaining-tokens-day"] == "0"
        # refused by the quota: the request took nothing from the per-minute window
        assert error.headers["x-ratelimit-remaining-requests"] == "9"
        usage = await keys.usage(key, known=True)
        assert usage.quotas == []  # a bootstrap-like id with no record: no quotas to show
    run(scenario())


def test_request_quota_counts_admitted_requests_only(store):
    async def scenario():
        clock = QuotaClock("UTC")
        keys, limiter = KeyService(store, set(), clock=clock), RateLimiter(store, 0, 0, clock)
        key, quotas = unique(), [Quota("requests-day", 2)]
        await keys.record_usage(key, 429, 0, 0, admitted=False)  # refused earlier: not counted
        for _ in range(2):
            await limiter.admit(key, limiter.limits(None, None), quotas=clock.states(key, quotas, time.time()))
            await keys.record_usage(key, 200, 1, 1, admitted=True)
        with pytest.raises(QuotaExceeded) as caught:
            await limiter.admit(key, limiter.limits(None, None), quotas=clock.states(key, quotas, time.time()))
        assert caught.value.param == "requests-day" and "limit 2, used 2" in caught.value.message
    run(scenario())


def test_a_web_token_counts_against_its_minters_quota_and_series(store):
    async def scenario():
        clock = QuotaClock("UTC")
        keys = KeyService(store, {"m1"}, clock=clock)
        limiter = RateLimiter(store, 0, 0, clock)
        seen: list = []
        pipeline = Pipeline(None, limiter, keys, on_quota=lambda *event: seen.append(event))
        minter = await keys.create(KeyCreate(name="site", scopes=["tokens", "inference"], daily_token_quota=50))
        token = await keys.create(KeyCreate(name="tok", models=["m1"], rate_limit_per_minute=5, tokens_per_minute=1000,
                                            expires_in_s=600), web_token=True, minted_by=minter.id,
                                  minter_limits=(0, 0), minter_quotas={"daily_token_quota": 50})
        assert token.daily_token_quota is None  # it inherits nothing of the minter's quotas...
        principal = Principal.from_record(await keys.record(token.id))
        assert principal.quotas == (Quota("tokens-day", 50),)  # ...but counts against them

        async def one(tokens: int):
            admission = Admission(pipeline, RequestContext("websocket", None, "127.0.0.1"), principal)
            async with admission.settling():
                await admission.limit("m1", 10)
                admission.charge(tokens, 0)
            return admission

        await one(30)
        await one(30)  # 30 used < 50: admitted, and now 60
        with pytest.raises(QuotaExceeded) as caught:
            await one(1)
        assert f"of key {minter.id} reached" in caught.value.message
        assert seen == [(minter.id, "tokens-day", 0.0), (minter.id, "tokens-day", 0.6), (minter.id, "tokens-day", 1.2)]
        now = int(time.time())
        rows = await keys.series("minute", now - 60, now + 1, key_id=minter.id)
        assert [(r["model"], r["requests"], r["errors"], r["prompt_tokens"]) for r in rows] == [("m1", 3, 1, 60)]
        assert await keys.series("minute", now - 60, now + 1, key_id=token.id) == []  # no series of its own
        minter_usage = await keys.usage(minter.id)
        assert [(q.name, q.limit, q.used) for q in minter_usage.quotas] == [("tokens-day", 50, 60)]
        assert (await keys.usage(token.id)).quotas == minter_usage.quotas  # shared
        assert (await keys.usage(token.id)).requests == 3  # its own running total stays its own
        unminted = await keys.create(KeyCreate(name="boot", models=["m1"], rate_limit_per_minute=5,
                                               tokens_per_minute=9, expires_in_s=60), web_token=True)
        assert Principal.from_record(await keys.record(unminted.id)).usage_owner == WEB_TOKENS_OWNER
        assert Principal.from_record(await keys.record(minter.id)).usage_owner == minter.id
        cleared = await keys.update(minter.id, KeyUpdate(daily_token_quota=None))
        assert cleared.daily_token_quota is None and (await keys.usage(minter.id)).quotas == []
    run(scenario())


def test_the_cli_sets_the_same_quota_fields():
    from serve_app import keys_cli
    from serve_app.access.usage import QUOTA_FIELDS

    assert keys_cli.QUOTA_FIELDS == QUOTA_FIELDS
    args = keys_cli._parser().parse_args(["update", "key-1", "--daily-token-quota", "5", "--monthly-request-quota", "0"])
    assert keys_cli._fields(args) == {"daily_token_quota": 5, "monthly_request_quota": 0}
