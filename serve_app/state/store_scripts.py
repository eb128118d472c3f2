"""The Lua scripts RedisStore runs: each is one atomic round trip (MemoryStore does the same in
one step of the event loop)."""

# INCRBY then set the window's expiry once, atomically: concurrent callers see distinct totals.
INCR_WINDOW = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
"""

# A rate-limit admission in one round trip, over one or more pairs of windows (a key's own;
# for a web token also its minter's pool and the pool of the client's address) and the key's
# quotas: a quota whose period counter is at or over its limit refuses first (nothing counted);
# then count the request in every requests window (RPM), then reserve `reserve` tokens in every
# tokens window (TPM) unless one already holds some and they would pass its limit (an empty
# window takes any one request, so a reservation larger than the limit still runs, alone).
# Nothing is reserved when refused. KEYS: requests and tokens key of each pair, then each
# quota's hash; ARGV: reserve, window, number of quotas, rpm and tpm of each pair, then field
# and limit of each quota. Returns the verdict (0 admitted, 1 over a request limit, 2 over a
# token limit, 3 over a quota), the 1-based pair (or quota) that refused, then per pair:
# requests used, its window's ms left, tokens used, its ms left; then each quota's count.
TAKE_WINDOW = """
local reserve, window, nq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local pairs_n = (#KEYS - nq) / 2
local function add(key, amount)
  local total = redis.call('INCRBY', key, amount)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return total
end
local verdict, which, used, counted = 0, 0, {}, {}
for q = 1, nq do
  local at = 3 + 2 * pairs_n + 2 * q
  counted[q] = tonumber(redis.call('HGET', KEYS[2 * pairs_n + q], ARGV[at - 1]) or '0')
  if verdict == 0 and counted[q] >= tonumber(ARGV[at]) then verdict, which = 3, q end
end
for i = 1, pairs_n do
  local rpm, tpm = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local requests, tokens = 0, 0
  if rpm > 0 then
    if verdict == 3 then requests = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
    else requests = add(KEYS[2 * i - 1], 1) end
    if verdict == 0 and requests > rpm then verdict, which = 1, i end
  end
  if tpm > 0 then
    tokens = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if verdict == 0 and (tokens >= tpm or (tokens > 0 and tokens + reserve > tpm)) then verdict, which = 2, i end
  end
  used[i] = {requests, tokens, tpm}
end
local out = {verdict, which}
for i = 1, pairs_n do
  local tokens = used[i][2]
  if verdict == 0 and reserve > 0 and used[i][3] > 0 then tokens = add(KEYS[2 * i], reserve) end
  table.insert(out, used[i][1])
  table.insert(out, redis.call('PTTL', KEYS[2 * i - 1]))
  table.insert(out, tokens)
  table.insert(out, redis.call('PTTL', KEYS[2 * i]))
end
for q = 1, nq do table.insert(out, counted[q]) end
return out
"""

# Several hashes changed in one round trip (a request's usage: its key's running totals, the
# minute, hour and day buckets, the quota periods). ARGV per hash: ttl (0: none), number of
# counters, number of values, then field/amount pairs, then field/value pairs. The ttl is set
# only on a hash that has none yet, so a bucket expires a fixed time after it opened.
HUPDATE_MANY = """
local a = 1
for k = 1, #KEYS do
  local ttl, n, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  if m > 0 then
    local values = {}
    for _ = 1, m do
      table.insert(values, ARGV[a])
      table.insert(values, ARGV[a + 1])
      a = a + 2
    end
    redis.call('HSET', KEYS[k], unpack(values))
  end
  if ttl > 0 and redis.call('TTL', KEYS[k]) == -1 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return 0
"""

# Settle a reservation: add `amount` (negative gives tokens back) to each window that still lives,
# never below zero (a negative window would let anything pass); a positive amount opens a new window.
SETTLE_WINDOW = """
local amount = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current then
    redis.call('SET', key, math.max(0, tonumber(current) + amount), 'KEEPTTL')
  elseif amount > 0 then redis.call('SET', key, amount, 'EX', ARGV[2]) end
end
return 0
"""

# Follow an index in one round trip: the value at `prefix .. GET(index)` (an API key's record by hash).
GET_INDIRECT = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"""

# Replace a string only if it still holds what the caller read (an optimistic read-modify-write).
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""
