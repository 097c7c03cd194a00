-- A circuit breaker per provider, shared by every worker: one hash, one round trip.
-- KEYS[1]  the provider's hash ({breaker:<name>}): state, failures, opened_ms, probe_until_ms
-- ARGV[1]  "allow" | "success" | "failure"
-- ARGV[2]  failures in a row that open the circuit
-- ARGV[3]  milliseconds an open circuit waits before one probe call (half-open)
-- returns  {allowed 0/1, state, milliseconds until a call may be tried again}
local key, op = KEYS[1], ARGV[1]
local threshold, reset = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', key, 'state') or 'closed'

if op == 'allow' then
  if state == 'closed' then return {1, state, 0} end
  if state == 'open' then
    local opened = tonumber(redis.call('HGET', key, 'opened_ms') or '0')
    if now < opened + reset then return {0, state, opened + reset - now} end
    redis.call('HSET', key, 'state', 'half_open', 'probe_until_ms', now + reset)
    return {1, 'half_open', 0}
  end
  -- half-open: one probe at a time; a probe that never reported is replaced after `reset`.
  local probe_until = tonumber(redis.call('HGET', key, 'probe_until_ms') or '0')
  if now < probe_until then return {0, state, probe_until - now} end
  redis.call('HSET', key, 'probe_until_ms', now + reset)
  return {1, state, 0}
end

if op == 'success' then
  redis.call('HSET', key, 'state', 'closed', 'failures', 0)
  return {1, 'closed', 0}
end

-- failure
local failures = redis.call('HINCRBY', key, 'failures', 1)
if state == 'half_open' or (state == 'closed' and failures >= threshold) then
  redis.call('HSET', key, 'state', 'open', 'opened_ms', now)
  redis.call('HINCRBY', key, 'opened_total', 1)
  return {0, 'open', reset}
end
return {1, state, 0}
