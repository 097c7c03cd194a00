-- A counter per calendar window aligned to the epoch (the twin of algorithms.fixed_window).
-- KEYS[1]: hash {w = window index, c = count}
-- ARGV: spec 'rate period_us capacity count_refused', cost
local key = KEYS[1]
local spec = {}
for field in string.gmatch(ARGV[1], '%S+') do spec[#spec + 1] = tonumber(field) end
local rate, period, cap, count_refused = spec[1], spec[2], spec[3], spec[4] == 1
local cost = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = math.floor(now / period)

local count = 0
local s = redis.call('HMGET', key, 'w', 'c')
if s[1] and tonumber(s[1]) == window then count = tonumber(s[2]) end
local reset = (window + 1) * period - now
local function save(c)
  redis.call('HSET', key, 'w', string.format('%.17g', window), 'c', c)
  redis.call('PEXPIRE', key, math.ceil(reset / 1000) + 1000)
end
local idle_reset = 0
if count > 0 then idle_reset = reset end
if cost > rate then
  return {0, rate, rate - count, idle_reset, -1}
end
if count + cost <= rate then
  if cost == 0 then return {1, rate, rate - count, idle_reset, 0} end
  count = count + cost
  save(count)
  return {1, rate, rate - count, reset, 0}
end
if count_refused then
  count = math.min(rate, count + cost)
  save(count)
end
return {0, rate, rate - count, reset, reset}
