-- Concurrency limiter (the twin of algorithms.concurrency): a lease is a set of sorted-set
-- members `<lease>#1..#cost`, each scored by its expiry, so a holder that dies without
-- releasing frees its slots after the lease lifetime.
-- KEYS[1]: zset of lease units
-- ARGV: rate (leases), period_us (lease lifetime), capacity, cost, count_refused, lease id
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local lease = ARGV[6]
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
  return {0, rate, rate - n, reset, -1}
end
if n + cost <= rate then
  if cost == 0 or lease == '' then return {1, rate, rate - n, reset, 0} end
  local args = {}
  for i = 1, cost do
    args[#args + 1] = string.format('%.17g', now + ttl)
    args[#args + 1] = lease .. '#' .. i
  end
  redis.call('ZADD', key, unpack(args))
  redis.call('PEXPIRE', key, math.ceil(ttl / 1000) + 1000)
  return {1, rate, rate - n - cost, ttl, 0}
end
local first = redis.call('ZRANGE', key, n + cost - rate - 1, n + cost - rate - 1, 'WITHSCORES')
return {0, rate, rate - n, reset, tonumber(first[2]) - now}
