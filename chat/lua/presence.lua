-- Presence of one room: who is connected, on which instance, until when.
-- KEYS[1] {room:<id>}:presence  (sorted set: member "<user>|<instance>", score = expiry, ms)
-- ARGV[1] "add" | "remove" | "list"; ARGV[2] member; ARGV[3] ttl in ms
-- Returns {pruned, member, member, ...}: how many expired entries were dropped (an instance
-- that died stops refreshing its users), then the members left.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local pruned = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'add' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
elseif ARGV[1] == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
local out = {pruned}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = m
end
return out
