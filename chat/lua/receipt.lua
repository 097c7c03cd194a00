-- Move one user's delivered or read watermark in a room forward (never back).
-- KEYS[1] {room:<id>}:receipts  (hash: "d:<user>" and "r:<user>" -> seq)
-- ARGV[1] user; ARGV[2] "d" (delivered) or "r" (read); ARGV[3] seq
-- Returns {delivered, read} after the change, or an empty list when nothing moved. Read
-- implies delivered, so a read also lifts the delivered watermark.
local user, kind, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local d = tonumber(redis.call('HGET', KEYS[1], 'd:' .. user) or '0')
local r = tonumber(redis.call('HGET', KEYS[1], 'r:' .. user) or '0')
local moved = false
if kind == 'r' and seq > r then
  r = seq
  redis.call('HSET', KEYS[1], 'r:' .. user, r)
  moved = true
end
if seq > d then
  d = seq
  redis.call('HSET', KEYS[1], 'd:' .. user, d)
  moved = true
end
if not moved then
  return {}
end
return {d, r}
