-- GCRA that hands out a batch: the decision gcra.lua makes for one cost, and when it is
-- allowed, up to `want` tokens taken in all (never fewer than the cost). The caller
-- (PrefetchBackend) spends the rest locally, without asking again, until they expire.
-- KEYS[1]: the same hash gcra.lua keeps {d = debt in tokens, t = last update in µs, a =
--          tokens taken in all, c = created in µs}: callers that prefetch and callers that
--          do not share one bucket.
-- ARGV: spec 'rate period_us capacity count_refused', cost, want (>= cost), refund (tokens
--       of an earlier batch never spent, given back first so that others may have them),
--       refund_taken_us (when that batch was taken, by this clock)
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never), granted,
--          now_us, position (`a` after the batch: its tokens sit just below it in the debt)}.
-- (Its first lines repeat gcra.lua's: a Redis script cannot share code with another.)
local key = KEYS[1]
local rate, period, cap, refused = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01])$')
rate, period, cap = tonumber(rate), tonumber(period), tonumber(cap)
local cost, want, refund = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local taken = tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local T = period / rate

local function ceil(x) if x > 0 then return math.ceil(x - 1e-9) end return 0 end

local d = 0
local a = 0
local s = redis.call('HMGET', key, 'd', 't', 'a')
if s[1] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  d = math.max(0, tonumber(s[1]) - elapsed / T)
  a = tonumber(s[3]) or 0
end

-- Unspent tokens go back only as far as their debt has not been repaid since they were
-- taken: all of it would hand out, again, refill that other requests already had (take 5,
-- repay them over 5 s while others take the refill, give 5 back: 5 tokens too many).
refund = math.max(0, refund - math.max(0, now - taken) / T)
local changed = refund > 0
d = math.max(0, d - refund)

local allowed, retry, granted = 0, -1, 0
if cost <= cap then
  if d + cost <= cap then
    granted = math.max(cost, math.min(want, math.floor(cap - d)))
    d, a = d + granted, a + granted
    changed = changed or granted > 0
    allowed, retry = 1, 0
  else
    retry = ceil((d + cost - cap) * T)
    if refused == '1' then  -- count_refused
      d, a = math.max(d, math.min(cap, d + cost)), a + cost  -- (as gcra.lua)
      changed = true
    end
  end
end

local ttl = ceil(d * T / 1000) + 1000
if changed then
  local t = string.format('%.17g', now)
  redis.call('HSET', key, 'd', string.format('%.17g', d), 't', t, 'a', string.format('%.17g', a))
  if not s[1] then redis.call('HSET', key, 'c', t) end
  redis.call('PEXPIRE', key, ttl)
elseif d > 0 and redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, ttl)  -- (as in gcra.lua: never forget a debt early)
end
return {allowed, cap, math.floor(cap - d), ceil(d * T), retry, granted, now, a}
