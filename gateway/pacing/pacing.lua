-- Shared pacing buckets: the math of gateway/pacing/bucket.py, run atomically inside Redis.
--
-- Times are integer microseconds from the Redis server's clock (TIME), so replica clocks never
-- matter. Each bucket has two keys, in one cluster hash slot (the caller adds a {tag}):
--   KEYS[i]     hash  tat, paused   (theoretical arrival time, paused-until)
--   KEYS[i+1]   zset  holes: member = the freed reservation's tat-after (zero-padded), score = slot
-- ARGV[1] is the operation, ARGV[2] the cap on holes per bucket, ARGV[3] a fixed now for tests ('' in
-- production: TIME); the rest (from ARGV[4]) depends on the operation:
--   reserve  n, then per call: max_wait, nb, then per bucket: key index, interval, tolerance
--            -> {now, {0, retry_after} | {1, slot, key_1..key_nb, paused_1..paused_nb}, ...}
--   release  nb, then per bucket: key index, interval, slot, key        -> {now}
--   pause    key index, tolerance, seconds_us                           -> {now, paused}
--   state    key index                                                  -> {now, tat, paused}

local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local op = ARGV[1]
local max_holes = tonumber(ARGV[2])
local KEEP_MS = 60000

local function fmt(x) return string.format('%.0f', x) end
local function member(k) return string.format('%020.0f', k) end

local function load(i)
  local v = redis.call('HMGET', KEYS[i], 'tat', 'paused')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end

-- Keep a bucket's keys only as long as its state matters.
local function touch(i, tat, paused)
  local ms = math.floor((math.max(tat, paused) - now) / 1000) + KEEP_MS
  redis.call('PEXPIRE', KEYS[i], ms)
  redis.call('PEXPIRE', KEYS[i + 1], ms)
end

local function first_hole(i, paused)
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', '(' .. fmt(math.max(now, paused)))
  local h = redis.call('ZRANGE', KEYS[i + 1], 0, 0, 'WITHSCORES')
  if #h == 0 then return nil, nil end
  return tonumber(h[2]), tonumber(h[1])
end

local function add_hole(i, slot, key)
  if redis.call('ZCARD', KEYS[i + 1]) < max_holes then
    redis.call('ZADD', KEYS[i + 1], fmt(slot), member(key))
  end
end

local function reserve_one(pos)
  local max_wait, nb = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local idx, iv, tol, tat, paused, hs, hk = {}, {}, {}, {}, {}, {}, {}
  local regular, candidates = now, {}
  for b = 1, nb do
    idx[b], iv[b], tol[b] = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
    pos = pos + 3
    tat[b], paused[b] = load(idx[b])
    regular = math.max(regular, tat[b] - tol[b], paused[b])
    hs[b], hk[b] = first_hole(idx[b], paused[b])
    if hs[b] then table.insert(candidates, hs[b]) end
  end
  table.sort(candidates)
  local slot = regular
  for _, h in ipairs(candidates) do
    if h < regular then
      local fits = true
      for b = 1, nb do
        if not (hs[b] == h or math.max(now, tat[b] - tol[b], paused[b]) <= h) then fits = false break end
      end
      if fits then slot = h break end
    end
  end
  if slot - now > max_wait then return {0, slot - now}, pos end
  local out = {1, slot}
  for b = 1, nb do
    if hs[b] == slot then
      redis.call('ZREM', KEYS[idx[b] + 1], member(hk[b]))
      out[#out + 1] = hk[b]
    else
      tat[b] = math.max(tat[b], slot) + iv[b]
      redis.call('HSET', KEYS[idx[b]], 'tat', fmt(tat[b]))
      out[#out + 1] = tat[b]
    end
    touch(idx[b], tat[b], paused[b])
  end
  for b = 1, nb do out[#out + 1] = paused[b] end
  return out, pos
end

if op == 'reserve' then
  local out, pos = {now}, 5
  for _ = 1, tonumber(ARGV[4]) do
    local one
    one, pos = reserve_one(pos)
    out[#out + 1] = one
  end
  return out
elseif op == 'release' then
  local pos = 5
  for _ = 1, tonumber(ARGV[4]) do
    local i, iv, slot, key = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
    pos = pos + 4
    local tat, paused = load(i)
    if tat ~= key then
      if slot >= now then add_hole(i, slot, key) end
    else
      tat = tat - iv
      while redis.call('ZSCORE', KEYS[i + 1], member(tat)) do
        redis.call('ZREM', KEYS[i + 1], member(tat))
        tat = tat - iv
      end
      redis.call('HSET', KEYS[i], 'tat', fmt(tat))
    end
    touch(i, tat, paused)
  end
  return {now}
elseif op == 'pause' then
  local i, tol, span = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local tat, paused = load(i)
  paused = math.max(paused, now + span)
  tat = math.max(tat, now + span + tol)
  redis.call('HSET', KEYS[i], 'tat', fmt(tat), 'paused', fmt(paused))
  touch(i, tat, paused)
  return {now, paused}
elseif op == 'state' then
  local tat, paused = load(tonumber(ARGV[4]))
  return {now, tat, paused}
end
return redis.error_reply('unknown pacing operation')
