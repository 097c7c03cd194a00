-- Sliding-window counter (the twin of algorithms.sliding_window): this window's count plus
-- the previous window's, weighted by how much of it the sliding window still covers.
-- KEYS[1]: hash {w = window index, c = this window's count, p = the previous window's}
-- ARGV: spec 'rate period_us capacity count_refused', cost
local key = KEYS[1]
local spec = {}
for field in string.gmatch(ARGV[1], '%S+') do spec[#spec + 1] = tonumber(field) end
local rate, p, cap, count_refused = spec[1], spec[2], spec[3], spec[4] == 1
local cost = tonumber(ARGV[2])
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
local est = prev * (p - into) / p + cur
local remaining = math.floor(rate - est)
local reset = 0
if cur > 0 then reset = (window + 2) * p - now elseif prev > 0 then reset = (window + 1) * p - now end
local function save()
  redis.call('HSET', key, 'w', string.format('%.17g', window), 'c', cur, 'p', prev)
  redis.call('PEXPIRE', key, math.ceil(2 * p / 1000) + 1000)
end
if cost > rate then
  return {0, rate, remaining, reset, -1}
end
if est + cost <= rate then
  if cost == 0 then return {1, rate, remaining, reset, 0} end
  cur = cur + cost
  est = est + cost
  save()
  return {1, rate, math.floor(rate - est), (window + 2) * p - now, 0}
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
  save()
end
return {0, rate, remaining, reset, math.max(1, retry)}
