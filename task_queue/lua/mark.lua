-- Mark a dispatch of a job as used without running it: deferred by a rate limit (field
-- `claimed`) or cancelled (field `cancelled`). Its message, delivered later, claims nothing.
-- KEYS[1] tq:live:{job:<id>}  (hash: claimed, cancelled = dispatch numbers; worker; started)
-- ARGV[1] field; ARGV[2] dispatch; ARGV[3] the hash's lifetime (seconds)
-- Returns 1 when a worker had claimed that dispatch (the job runs or ran), else 0.
local dispatch = tonumber(ARGV[2])
local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '0')
local marked = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if dispatch > marked then
  redis.call('HSET', KEYS[1], ARGV[1], dispatch)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if claimed >= dispatch and ARGV[1] == 'cancelled' then
  return 1
end
return 0
