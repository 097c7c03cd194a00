-- Give back what an allowed decision took for a request that then did not go ahead (another
-- rule of its check refused it): the twin of refunds.refund. Only what the key still
-- holds of it goes back, never more, so the limit's bound holds whatever came in between.
-- KEYS[1]: the key's state, as the algorithm's own script keeps it
-- ARGV: algorithm, spec 'rate period_us capacity count_refused', cost, at_us (the time the
--       decision's script ran) and position (gcra: `a` after the decision), as it returned
--       them, and shared ('1': gcra, the position is a prefetched batch's, which several
--       decisions share)
-- Returns {remaining, reset_us} after the refund (the remaining 0 at least: a limit lowered
-- since may leave the key over it; reset_us, the µs until the key is full again), or -1 when
-- nothing went back.
local key, algorithm = KEYS[1], ARGV[1]
local rate, p, cap = string.match(ARGV[2], '^(%d+) (%d+) (%d+) [01]$')
rate, p, cap = tonumber(rate), tonumber(p), tonumber(cap)
local cost, at, position = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local shared = ARGV[6] == '1'
if not rate or not cost or cost < 1 or not at then return -1 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = math.floor(now / p)

if algorithm == 'gcra' then
  -- The debt is repaid oldest first, and every token taken after these (`a - position` at
  -- most: some may have been refunded since) sits above them. So of the debt, what lies
  -- below those later tokens is these units', up to `cost`: the least they can still be
  -- owed, whatever was repaid or refunded meanwhile and at whatever rate.
  local s = redis.call('HMGET', key, 'd', 't', 'a', 'c', 'u')
  if not s[1] or not s[3] or not position then return -1 end
  local a, created = tonumber(s[3]), tonumber(s[4]) or 0
  -- A key that expired and came back is another bucket: its positions are not these. Nor
  -- do they hold once a version without positions has written (`t` without its copy `u`;
  -- the next acquire moves `c` past them for good).
  if created > at or s[5] ~= s[2] or position > a or position < cost then return -1 end
  local T = p / rate
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  local d = math.max(0, tonumber(s[1]) - elapsed / T)
  local back = math.min(cost, d - (a - position))
  if back <= 0 then return -1 end
  d = d - back
  -- The newest tokens: as if never taken, so that refunds of the decisions below them (in
  -- any order) still find them gone from above. Not for a shared position: the others
  -- sharing it would then find tokens taken later below them.
  if position == a and not shared then a = a - math.floor(back + 1e-9) end
  -- (the key's expiry stays: it was set for a debt at least this large)
  local t = string.format('%.17g', now)
  redis.call('HSET', key, 'd', string.format('%.17g', d), 't', t, 'a', string.format('%.17g', a),
    'u', t)
  -- (the subtraction leaves float noise: a billionth of a token is not a token less)
  local reset = 0
  if d > 1e-9 then reset = math.ceil(d * T - 1e-9) end
  return {math.max(0, math.floor(cap - d + 1e-9)), reset}
end

if algorithm == 'fixed_window' then
  -- From the window's count, while that window lasts.
  if math.floor(at / p) ~= window then return -1 end
  local s = redis.call('HMGET', key, 'w', 'c')
  if not s[1] or tonumber(s[1]) ~= window then return -1 end
  local count = math.max(0, tonumber(s[2]) - cost)
  redis.call('HSET', key, 'c', count)
  local reset = 0
  if count > 0 then reset = (window + 1) * p - now end
  return {math.max(0, rate - count), reset}
end

if algorithm == 'sliding_window' then
  -- From the count of the window they were counted in: the stored current one, or the
  -- previous one once a later decision rolled the windows over (it still weighs).
  local taken = math.floor(at / p)
  if window > taken + 1 then return -1 end
  local s = redis.call('HMGET', key, 'w', 'c', 'p')
  if not s[1] then return -1 end
  local w, cur, prev = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  if w == taken then
    cur = math.max(0, cur - cost)
  elseif w == taken + 1 then
    prev = math.max(0, prev - cost)
  else
    return -1
  end
  redis.call('HSET', key, 'c', cur, 'p', prev)
  local into = now - window * p
  local est, now_cur, now_prev
  if w == window then
    est, now_cur, now_prev = prev * (p - into) / p + cur, cur, prev
  else
    est, now_cur, now_prev = cur * (p - into) / p, 0, cur
  end
  local reset = 0
  if now_cur > 0 then reset = (window + 2) * p - now elseif now_prev > 0 then reset = (window + 1) * p - now end
  return {math.max(0, math.floor(rate - est)), reset}
end

if algorithm == 'sliding_log' then
  -- `cost` entries of the time `at`, while they are in the log (entries of one time are
  -- alike: which of them go is all the same).
  if at <= now - p then return -1 end
  local score = string.format('%.17g', at)
  local mine = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', 0, cost)
  if #mine == 0 then return -1 end
  local i = 1
  while i <= #mine do  -- (in chunks: unpack() takes a few thousand values at most)
    redis.call('ZREM', key, unpack(mine, i, math.min(#mine, i + 999)))
    i = i + 1000
  end
  local left = redis.call('ZCOUNT', key, '(' .. string.format('%.17g', now - p), '+inf')
  local reset = 0
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if left > 0 and newest[2] then reset = tonumber(newest[2]) + p - now end
  return {math.max(0, rate - left), reset}
end

return -1  -- (concurrency: a lease is given back by release.lua)
