-- Release a concurrency lease: remove its units `<lease>#1..#cost`.
-- KEYS[1]: zset of lease units; ARGV: lease id, the cost the id claims
-- The claim comes from a client: it is believed only if the lease's last unit is held (one
-- O(1) lookup) and has not expired, and then the units go in chunks, so no claim can make
-- the script fail or run long. An expired lease frees nothing (the next decision sweeps it).
local key, lease, cost = KEYS[1], ARGV[1], tonumber(ARGV[2])
if not cost or cost < 1 then return 0 end
local expires = redis.call('ZSCORE', key, lease .. '#' .. ARGV[2])
if not expires then return 0 end
local clock = redis.call('TIME')
if tonumber(expires) <= tonumber(clock[1]) * 1000000 + tonumber(clock[2]) then return 0 end
local removed = 0
local i = 1
while i <= cost do
  local members = {}
  for j = i, math.min(cost, i + 999) do members[#members + 1] = lease .. '#' .. j end
  removed = removed + redis.call('ZREM', key, unpack(members))
  i = i + 1000
end
return removed
