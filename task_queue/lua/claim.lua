-- Claim one dispatch of a job for a worker, unless that dispatch (or a later one) was already
-- claimed, deferred or cancelled: a redelivered or stale message claims nothing.
-- KEYS[1] tq:live:{job:<id>}  (hash: claimed, cancelled = dispatch numbers; worker; started)
-- KEYS[2] tq:unrecorded       (sorted set "<id> <dispatch>" -> claim time: claims SQL has
--                              not recorded yet; the reaper looks here for lost workers)
-- ARGV[1] dispatch; ARGV[2] worker; ARGV[3] job id; ARGV[4] the hash's lifetime (seconds)
-- Returns the claim time (Redis TIME, seconds, as a string) or false.
local dispatch = tonumber(ARGV[1])
local marks = redis.call('HMGET', KEYS[1], 'claimed', 'cancelled')
if tonumber(marks[1] or '0') >= dispatch or tonumber(marks[2] or '0') >= dispatch then
  return false
end
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
redis.call('HSET', KEYS[1], 'claimed', dispatch, 'worker', ARGV[2], 'started', now)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[3] .. ' ' .. ARGV[1])
return now
