-- Release a concurrency lease: remove its units `<lease>#1..#cost`.
-- KEYS[1]: zset of lease units; ARGV: lease id, cost
local members = {}
for i = 1, tonumber(ARGV[2]) do members[#members + 1] = ARGV[1] .. '#' .. i end
return redis.call('ZREM', KEYS[1], unpack(members))
