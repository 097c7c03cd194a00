-- Concurrency limiter (the twin of algorithms.concurrency): a lease is a set of sorted-set
-- members `<lease>#1..#cost`, each scored by its expiry, so a holder that dies without
-- releasing frees its slots after the lease lifetime.
-- KEYS[1]: zset of lease units
-- ARGV: spec 'rate period_us capacity count_refused', cost, lease id
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never), now_us, 0}
-- (the position, 0: only gcra.lua keeps one).
local key = KEYS[1]
local spec = {}
for field in string.gmatch(ARGV[1], '%S+') do spec[#spec + 1] = tonumber(field) end
local rate, ttl, cap, count_refused = spec[1], spec[2], spec[3], spec[4] == 1
local cost = tonumber(ARGV[2])
local lease = ARGV[3] or ''
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', now))
local n = redis.call('ZCARD', key)
local reset = 0
if n > 0 then
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  reset = tonumber(last[2]) - now
end
if cost > rate then
  return {0, rate, rate - n, reset, -1, now, 0}
end
if n + cost <= rate then
  if cost == 0 or lease == '' then return {1, rate, rate - n, reset, 0, now, 0} end
  local score = string.format('%.17g', now + ttl)
  -- In chunks: unpack() takes a few thousand values at most, and a cost may be larger.
  local i = 1
  while i <= cost do
    local args = {}
    for j = i, math.min(cost, i + 999) do
      args[#args + 1] = score
      args[#args + 1] = lease .. '#' .. j
    end
    redis.call('ZADD', key, unpack(args))
    i = i + 1000
  end
  -- Never shorten: leases taken under a longer lifetime (before a limit change) stay held.
  local want = math.ceil(ttl / 1000) + 1000
  if redis.call('PTTL', key) < want then redis.call('PEXPIRE', key, want) end
  return {1, rate, rate - n - cost, ttl, 0, now, 0}
end
-- A slot frees when its holder releases it, which nobody can foresee, or at the latest when
-- the lease expires: retry in a second, or sooner if enough leases expire sooner.
local first = redis.call('ZRANGE', key, n + cost - rate - 1, n + cost - rate - 1, 'WITHSCORES')
return {0, rate, rate - n, reset, math.min(tonumber(first[2]) - now, 1000000), now, 0}
