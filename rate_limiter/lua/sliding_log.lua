-- Sliding log (the twin of algorithms.sliding_log): one sorted-set entry per admitted unit,
-- scored by its time, kept for one period. Exact; memory grows with the rate.
-- KEYS[1]: zset of entries; KEYS[2]: sequence counter that makes entries unique
-- ARGV: spec 'rate period_us capacity count_refused', cost
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never), now_us, 0}
-- (the position, 0: only gcra.lua keeps one).
local key, seq = KEYS[1], KEYS[2]
local spec = {}
for field in string.gmatch(ARGV[1], '%S+') do spec[#spec + 1] = tonumber(field) end
local rate, p, cap, count_refused = spec[1], spec[2], spec[3], spec[4] == 1
local cost = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', now - p))
local n = redis.call('ZCARD', key)
local reset = 0
if n > 0 then
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  reset = tonumber(newest[2]) + p - now
end
-- A decision that adds nothing still keeps the entries as long as *this* period counts them
-- (after the period was lengthened, the expiry set under the old one would drop them early).
local function keep()
  local want = math.ceil(reset / 1000) + 1000
  if n > 0 and redis.call('PTTL', key) < want then
    redis.call('PEXPIRE', key, want)
    redis.call('PEXPIRE', seq, want)
  end
end
local function add()
  local last = redis.call('INCRBY', seq, cost)
  local score = string.format('%.17g', now)
  -- In chunks: unpack() takes a few thousand values at most, and a cost may be larger.
  local i = 1
  while i <= cost do
    local args = {}
    for j = i, math.min(cost, i + 999) do
      args[#args + 1] = score
      args[#args + 1] = tostring(last - cost + j)
    end
    redis.call('ZADD', key, unpack(args))
    i = i + 1000
  end
  local ttl = math.ceil(p / 1000) + 1000
  redis.call('PEXPIRE', key, ttl)
  redis.call('PEXPIRE', seq, ttl)
end
if cost > rate then
  keep()
  return {0, rate, rate - n, reset, -1, now, 0}
end
if n + cost <= rate then
  if cost == 0 then
    keep()
    return {1, rate, rate - n, reset, 0, now, 0}
  end
  add()
  return {1, rate, rate - n - cost, p, 0, now, 0}
end
local oldest = redis.call('ZRANGE', key, n + cost - rate - 1, n + cost - rate - 1, 'WITHSCORES')
local retry = tonumber(oldest[2]) + p - now
if count_refused then
  add()
  redis.call('ZREMRANGEBYRANK', key, 0, -(rate + 1))
else
  keep()
end
return {0, rate, math.max(0, rate - n), reset, retry, now, 0}
