-- Sliding-window counter (the twin of algorithms.sliding_window): this window's count plus
-- the previous window's, weighted by how much of it the sliding window still covers.
-- KEYS[1]: hash {w = window index, c = this window's count, p = the previous window's}
-- ARGV: spec 'rate period_us capacity count_refused', cost [, cost ...]
-- Several costs are decided one after another, as that many calls at the same instant would
-- be (see gcra.lua); one flat array of seven figures per cost (as gcra.lua's;
-- the position is 0: a window's refund needs only the time).
local key = KEYS[1]
local rate, p, cap, refused = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01])$')
rate, p = tonumber(rate), tonumber(p)
local count_refused = refused == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = math.floor(now / p)

local function ceil(x) if x > 0 then return math.ceil(x - 1e-9) end return 0 end
local cur, prev = 0, 0
local s = redis.call('HMGET', key, 'w', 'c', 'p')
if s[1] then
  local w = tonumber(s[1])
  if w == window then
    cur, prev = tonumber(s[2]), tonumber(s[3])
  elseif w == window - 1 then
    prev = tonumber(s[2])
  end
end
local into = now - window * p
local weight = prev * (p - into) / p

local changed = false
-- allowed, remaining, reset_after, retry_after
local function decide(cost)
  local est = weight + cur
  local remaining = math.floor(rate - est)
  local reset = 0
  if cur > 0 then reset = (window + 2) * p - now elseif prev > 0 then reset = (window + 1) * p - now end
  if cost > rate then
    return 0, remaining, reset, -1
  end
  if est + cost <= rate then
    if cost == 0 then return 1, remaining, reset, 0 end
    cur = cur + cost
    changed = true
    return 1, math.floor(rate - est - cost), (window + 2) * p - now, 0
  end
  local retry
  if cur + cost > rate then
    local need = 0
    if cur > 0 then need = 1 - (rate - cost) / cur end
    retry = (window + 1) * p - now + ceil(math.max(0, need) * p)
  else
    local need = 1 - (rate - cost - cur) / prev
    retry = window * p + ceil(need * p) - now
  end
  if count_refused then
    cur = math.min(rate, cur + cost)
    changed = true
  end
  return 0, remaining, reset, math.max(1, retry)
end
local out, n = {}, 0
for i = 2, #ARGV do
  local allowed, remaining, reset_after, retry = decide(tonumber(ARGV[i]))
  out[n + 1], out[n + 2], out[n + 3] = allowed, rate, remaining
  out[n + 4], out[n + 5], out[n + 6], out[n + 7] = reset_after, retry, now, 0
  n = n + 7
end
if changed then
  redis.call('HSET', key, 'w', string.format('%.17g', window), 'c', cur, 'p', prev)
  redis.call('PEXPIRE', key, math.ceil(2 * p / 1000) + 1000)
end
return out
