-- GCRA in its token form (the twin of algorithms.gcra).
-- KEYS[1]: the key's hash {d = debt in tokens, t = last update in µs, a = tokens taken in
--          all, c = since when positions count (its creation), u = a copy of t}
-- ARGV: spec 'rate period_us capacity count_refused', cost [, cost ...]
-- Several costs (a hot key's requests, coalesced by the client) are decided one after
-- another, exactly as that many calls at the same instant would be: one read, one write.
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never), now_us,
-- position} per cost, one after another in one flat array. `now_us` (Redis's time) and
-- `position` (`a` after this cost: where its tokens sit in the debt) are what a refund needs.
local key = KEYS[1]
local rate, period, cap, refused = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01])$')
rate, period, cap = tonumber(rate), tonumber(period), tonumber(cap)
local count_refused = refused == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local T = period / rate

local function ceil(x) if x > 0 then return math.ceil(x - 1e-9) end return 0 end

local d, a, created = 0, 0, now
local s = redis.call('HMGET', key, 'd', 't', 'a', 'c', 'u')
if s[1] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  d = math.max(0, tonumber(s[1]) - elapsed / T)
  a, created = tonumber(s[3]) or 0, tonumber(s[4]) or 0
  -- `t` without its copy: a version of this script without positions wrote last (during a
  -- rolling upgrade). It took tokens `a` does not count, so positions start over from now.
  if s[5] ~= s[2] then created = now end
end

local out, n, changed = {}, 0, false
local function decide(cost)
  if cost > cap then
    return 0, -1
  end
  if d + cost <= cap then
    if cost > 0 then
      d, a = d + cost, a + cost
      changed = true
    end
    return 1, 0
  end
  local retry = ceil((d + cost - cap) * T)
  if count_refused then
    -- (never lower: a debt above a burst lowered since stays; a counts the whole cost)
    d, a = math.max(d, math.min(cap, d + cost)), a + cost
    changed = true
  end
  return 0, retry
end
for i = 2, #ARGV do
  local allowed, retry = decide(tonumber(ARGV[i]))
  out[n + 1], out[n + 2], out[n + 3] = allowed, cap, math.floor(cap - d)
  out[n + 4], out[n + 5], out[n + 6], out[n + 7] = ceil(d * T), retry, now, a
  n = n + 7
end

local ttl = ceil(d * T / 1000) + 1000
if changed then
  local t = string.format('%.17g', now)
  local debt, total = string.format('%.17g', d), string.format('%.17g', a)
  redis.call('HSET', key, 'd', debt, 't', t, 'a', total, 'u', t)
  if created == now then redis.call('HSET', key, 'c', t) end
  redis.call('PEXPIRE', key, ttl)
elseif d > 0 and redis.call('PTTL', key) < ttl then
  -- Nothing written, but the key lives as long as its debt takes to repay at *this* rate:
  -- after a limit was lowered, the expiry set under the old, faster rate would otherwise
  -- forget the debt early. It never shortens an expiry.
  redis.call('PEXPIRE', key, ttl)
end
return out
