-- Resolve a short code from the cache. One round trip; the keys share the hash tag {l:CODE},
-- so this is Redis Cluster safe. Visits of max_visits links are NOT claimed here: a claim
-- must survive a Redis crash, so it is made in SQL (service.py); Redis says where they go.
--
-- KEYS[1]  {l:CODE}     hash: u=url s=status m=max_visits p=has_password x=expires_at (epoch s)
--                       i=link id;  u="" is a negative-cache entry (the code does not exist)
-- KEYS[2]  {l:CODE}:v   version, bumped by every invalidation (see put.lua)
-- ARGV[1]  the mode: "look" (HEAD, password form), "visit", "unlocked" (password checked)
--
-- Returns (cache.Outcome first):
--   {0, version}  MISS: not cached; pass the version to put.lua
--   {1}           UNKNOWN code;   {4} GONE: expired
--   {2, url, status, has_password, link_id, max_visits, expires_at}  REDIRECT
--   {5, ...same}  PASSWORD: the form must be shown first
local h = redis.call('HMGET', KEYS[1], 'u', 's', 'm', 'p', 'x', 'i')
if not h[1] then return {0, redis.call('GET', KEYS[2]) or '0'} end
if h[1] == '' then return {1} end
local expires = tonumber(h[5])
if expires then
  local now = redis.call('TIME')
  if tonumber(now[1]) >= expires then return {4} end
end
if h[4] == '1' and ARGV[1] ~= 'unlocked' then
  return {5, h[1], h[2], '1', h[6], h[3], h[5]}
end
return {2, h[1], h[2], h[4], h[6], h[3], h[5]}
