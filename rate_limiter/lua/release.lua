-- Release a concurrency lease: remove its units `<lease>#1..#cost`.
-- KEYS[1]: zset of lease units; ARGV: lease id, the cost the id claims
-- The claim comes from a client: it is believed only if the lease's last unit is held (one
-- O(1) lookup), and then the units go in chunks, so no claim can make the script fail or
-- run long.
local key, lease, cost = KEYS[1], ARGV[1], tonumber(ARGV[2])
if not cost or cost < 1 or not redis.call('ZSCORE', key, lease .. '#' .. ARGV[2]) then
  return 0
end
local removed = 0
local i = 1
while i <= cost do
  local members = {}
  for j = i, math.min(cost, i + 999) do members[#members + 1] = lease .. '#' .. j end
  removed = removed + redis.call('ZREM', key, unpack(members))
  i = i + 1000
end
return removed
