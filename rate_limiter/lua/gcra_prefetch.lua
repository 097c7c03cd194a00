-- GCRA that hands out a batch: the decision gcra.lua makes for one cost, and when it is
-- allowed, up to `want` tokens taken in all (never fewer than the cost). The caller
-- (PrefetchBackend) spends the rest locally, without asking again, until they expire.
-- KEYS[1]: the same hash gcra.lua keeps {d = debt in tokens, t = last update in µs, a =
--          tokens taken in all, c = since when positions count, u = a copy of t}: callers
--          that prefetch and callers that do not share one bucket.
-- ARGV: spec 'rate period_us capacity count_refused', cost, want (>= cost), refund (tokens
--       of an earlier batch never spent, given back first so that others may have them),
--       refund_taken_us (when that batch was taken, by this clock), refund_position (its
--       position: `a` just after it, as this script returned it)
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never), granted,
--          now_us, position (`a` after the batch: its tokens sit just below it in the debt)}.
-- (Its first lines repeat gcra.lua's: a Redis script cannot share code with another.)
local key = KEYS[1]
local rate, period, cap, refused = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01])$')
rate, period, cap = tonumber(rate), tonumber(period), tonumber(cap)
local cost, want, refund = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local taken, position = tonumber(ARGV[5]), tonumber(ARGV[6]) or 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local T = period / rate

local function ceil(x) if x > 0 then return math.ceil(x - 1e-9) end return 0 end

local d = 0
local a, created = 0, now
local s = redis.call('HMGET', key, 'd', 't', 'a', 'c', 'u')
if s[1] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  d = math.max(0, tonumber(s[1]) - elapsed / T)
  a, created = tonumber(s[3]) or 0, tonumber(s[4]) or 0
  if s[5] ~= s[2] then created = now end  -- (a write without positions: see gcra.lua)
end

-- Unspent tokens go back only as far as they are still owed, as refund.lua works it out
-- for a decision: the batch's tokens lie below its position, the tokens taken since above
-- (`a - position` at most), and what of the debt lies below those is the batch's. (Not
-- "what has not been repaid since they were taken": on a busy key none of the newest
-- tokens is repaid yet. Nor all of them: that would hand out again refill that others had.)
-- The spent ones count as the batch's lowest, so the unspent are owed first.
-- (`a` is not lowered, as refund.lua does for a decision's: the batch's decisions made in
-- the process share its position)
if refund > 0 and s[3] and created <= taken and position <= a then
  refund = math.max(0, math.min(refund, d - (a - position)))
else
  refund = 0  -- (a key that expired and came back is another bucket)
end
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
  local debt, total = string.format('%.17g', d), string.format('%.17g', a)
  redis.call('HSET', key, 'd', debt, 't', t, 'a', total, 'u', t)
  if created == now then redis.call('HSET', key, 'c', t) end
  redis.call('PEXPIRE', key, ttl)
elseif d > 0 and redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, ttl)  -- (as in gcra.lua: never forget a debt early)
end
return {allowed, cap, math.floor(cap - d), ceil(d * T), retry, granted, now, a}
