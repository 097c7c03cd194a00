-- GCRA in its token form (the twin of algorithms.gcra).
-- KEYS[1]: the key's hash {d = debt in tokens, t = last update in µs}
-- ARGV: spec 'rate period_us capacity count_refused', cost
-- Returns {allowed, limit, remaining, reset_after_us, retry_after_us (-1 = never)}
local key = KEYS[1]
local spec = {}
for field in string.gmatch(ARGV[1], '%S+') do spec[#spec + 1] = tonumber(field) end
local rate, period, cap, count_refused = spec[1], spec[2], spec[3], spec[4] == 1
local cost = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local T = period / rate

local function ceil(x) if x > 0 then return math.ceil(x - 1e-9) end return 0 end
local function save(debt)
  redis.call('HSET', key, 'd', string.format('%.17g', debt), 't', string.format('%.17g', now))
  redis.call('PEXPIRE', key, ceil(debt * T / 1000) + 1000)
end

-- A decision that writes nothing still makes the key live as long as its debt takes to repay
-- at *this* rate: after a limit was lowered, the expiry set under the old, faster rate would
-- otherwise forget the debt early. It never shortens an expiry.
local function keep(debt)
  local want = ceil(debt * T / 1000) + 1000
  if redis.call('PTTL', key) < want then redis.call('PEXPIRE', key, want) end
end

local d = 0
local s = redis.call('HMGET', key, 'd', 't')
if s[1] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  d = math.max(0, tonumber(s[1]) - elapsed / T)
end
if cost > cap then
  if d > 0 then keep(d) end
  return {0, cap, math.floor(cap - d), ceil(d * T), -1}
end
if d + cost <= cap then
  if cost == 0 then
    if d > 0 then keep(d) end
    return {1, cap, math.floor(cap - d), ceil(d * T), 0}
  end
  d = d + cost
  save(d)
  return {1, cap, math.floor(cap - d), ceil(d * T), 0}
end
local retry = ceil((d + cost - cap) * T)
if count_refused then
  d = math.min(cap, d + cost)
  save(d)
elseif d > 0 then
  keep(d)
end
return {0, cap, math.floor(cap - d), ceil(d * T), retry}
