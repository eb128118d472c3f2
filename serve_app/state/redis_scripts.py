"""The Lua scripts RedisStore runs: each a store primitive in one atomic round trip.

MemoryStore (serve_app/state/store.py) gives every one of them the same meaning in one process.
"""

# INCRBY then set the window's expiry once, atomically: concurrent callers see distinct totals.
INCR_WINDOW = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
"""

# A rate-limit admission in one round trip, over one or more pairs of windows (a key's own;
# for a web token also its minter's pool and the pool of the client's address): count the
# request in every requests window (RPM), then reserve `reserve` tokens in every tokens window
# (TPM) unless one already holds some and they would pass its limit (an empty window takes any
# one request, so a reservation larger than the limit still runs, alone). Nothing is reserved
# when refused. KEYS: requests and tokens key of each pair; ARGV: reserve, window, then rpm and
# tpm of each pair. Returns the verdict (0 admitted, 1 over a request limit, 2 over a token
# limit), the 1-based pair that refused, then per pair: requests used, its window's ms left,
# tokens used, its ms left.
TAKE_WINDOW = """
local reserve, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local function add(key, amount)
  local total = redis.call('INCRBY', key, amount)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return total
end
local verdict, which, used = 0, 0, {}
for i = 1, #KEYS / 2 do
  local rpm, tpm = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local requests, tokens = 0, 0
  if rpm > 0 then
    requests = add(KEYS[2 * i - 1], 1)
    if verdict == 0 and requests > rpm then verdict, which = 1, i end
  end
  if tpm > 0 then
    tokens = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if verdict == 0 and (tokens >= tpm or (tokens > 0 and tokens + reserve > tpm)) then verdict, which = 2, i end
  end
  used[i] = {requests, tokens, tpm}
end
local out = {verdict, which}
for i = 1, #KEYS / 2 do
  local tokens = used[i][2]
  if verdict == 0 and reserve > 0 and used[i][3] > 0 then tokens = add(KEYS[2 * i], reserve) end
  table.insert(out, used[i][1])
  table.insert(out, redis.call('PTTL', KEYS[2 * i - 1]))
  table.insert(out, tokens)
  table.insert(out, redis.call('PTTL', KEYS[2 * i]))
end
return out
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

# settle_window's script, then hupdate's counters and values on KEYS[#KEYS]: a request's close (its
# tokens settled, its key's usage recorded) in one round trip. ARGV: amount, window, the number of
# counters, then (field, increment) per counter, then (field, value) pairs.
SETTLE_AND_HUPDATE = """
local amount, counters, usage = tonumber(ARGV[1]), tonumber(ARGV[3]), KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local current = redis.call('GET', KEYS[i])
  if current then
    redis.call('SET', KEYS[i], math.max(0, tonumber(current) + amount), 'KEEPTTL')
  elseif amount > 0 then redis.call('SET', KEYS[i], amount, 'EX', ARGV[2]) end
end
local at = 4
for _ = 1, counters do redis.call('HINCRBY', usage, ARGV[at], ARGV[at + 1]); at = at + 2 end
while at < #ARGV do redis.call('HSET', usage, ARGV[at], ARGV[at + 1]); at = at + 2 end
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
