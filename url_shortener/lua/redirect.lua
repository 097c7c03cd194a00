-- Resolve a short code from the cache and, for links with max_visits, claim one visit.
-- One round trip; both keys share the hash tag {l:CODE}, so this is Redis Cluster safe.
--
-- KEYS[1]  {l:CODE}     hash: u=url s=status m=max_visits p=has_password x=expires_at (epoch s)
--                       i=link id
--                       u="" is a negative-cache entry (the code does not exist)
-- KEYS[2]  {l:CODE}:n   visits used so far (links with max_visits only; no TTL)
-- KEYS[3]  {l:CODE}:v   version, bumped by every invalidation (see put.lua)
-- ARGV[1]  "1" to claim a visit (a real GET), "0" to only look (HEAD, password form)
--
-- Returns {kind, url, status, has_password, link_id, max_visits, expires_at}
--   kind 0 = not cached (with the version to pass to put.lua), 1 = unknown code, 2 = redirect, 3 = counter missing (caller rebuilds
--   it from SQL and calls again), 4 = gone (expired or out of visits), 5 = password needed
local h = redis.call('HMGET', KEYS[1], 'u', 's', 'm', 'p', 'x', 'i')
if not h[1] then return {0, redis.call('GET', KEYS[3]) or '0'} end
if h[1] == '' then return {1} end
local expires = tonumber(h[5])
if expires then
  local now = redis.call('TIME')
  if tonumber(now[1]) >= expires then return {4} end
end
if h[4] == '1' and ARGV[1] ~= 'pw' then
  return {5, h[1], h[2], '1', h[6], h[3], h[5]}
end
local max = tonumber(h[3])
if max and ARGV[1] == '0' then
  local used = redis.call('GET', KEYS[2])
  if not used then return {3} end
  if tonumber(used) >= max then return {4} end
elseif max then
  if redis.call('EXISTS', KEYS[2]) == 0 then return {3} end
  local used = redis.call('INCR', KEYS[2])
  if used > max then
    redis.call('DECR', KEYS[2])
    return {4}
  end
end
return {2, h[1], h[2], h[4], h[6], h[3], h[5]}
