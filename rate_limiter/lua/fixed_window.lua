-- A counter per calendar window aligned to the epoch (the twin of algorithms.fixed_window).
-- KEYS[1]: hash {w = window index, c = count}
-- ARGV: spec 'rate period_us capacity count_refused', cost [, cost ...]
-- Several costs are decided one after another, as that many calls at the same instant would
-- be (see gcra.lua); one flat array of seven figures per cost (as gcra.lua's;
-- the position is 0: a window's refund needs only the time).
local key = KEYS[1]
local rate, period, cap, refused = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01])$')
rate, period = tonumber(rate), tonumber(period)
local count_refused = refused == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = math.floor(now / period)
local reset = (window + 1) * period - now

local count = 0
local s = redis.call('HMGET', key, 'w', 'c')
if s[1] and tonumber(s[1]) == window then count = tonumber(s[2]) end

-- With count_refused (Envoy's counting) every hit counts, past the limit too, as Envoy's
-- counter does: a check of cost 0 is refused once it is over.
local changed = false
local function decide(cost)
  if cost <= rate and count + cost <= rate then
    if cost == 0 then
      if count > 0 then return 1, reset, 0 end
      return 1, 0, 0
    end
    count = count + cost
    changed = true
    return 1, reset, 0
  end
  if count_refused and cost > 0 then
    count = count + cost
    changed = true
  end
  local retry = reset
  if cost > rate then retry = -1 end
  if count > 0 then return 0, reset, retry end
  return 0, 0, retry
end
local out, n = {}, 0
for i = 2, #ARGV do
  local allowed, reset_after, retry = decide(tonumber(ARGV[i]))
  out[n + 1], out[n + 2], out[n + 3] = allowed, rate, math.max(0, rate - count)
  out[n + 4], out[n + 5], out[n + 6], out[n + 7] = reset_after, retry, now, 0
  n = n + 7
end
if changed then
  redis.call('HSET', key, 'w', string.format('%.17g', window), 'c', count)
  redis.call('PEXPIRE', key, math.ceil(reset / 1000) + 1000)
end
return out
