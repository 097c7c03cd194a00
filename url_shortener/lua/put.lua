-- Fill the cache after a miss, unless the link was invalidated since the miss was seen.
--
-- Without this check, a reader that loaded the old row from SQL just before an update or
-- delete committed could write the old value back after the invalidation, and it would be
-- served until the TTL ran out. The version is read by redirect.lua on the miss.
--
-- KEYS[1]  {l:CODE}     the cache entry
-- KEYS[2]  {l:CODE}:v   the version (missing = "0")
-- ARGV[1]  the version seen with the miss;  ARGV[2] TTL in seconds;  ARGV[3..] field, value...
-- Returns 1 when written, 0 when refused (the caller reads SQL again).
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
