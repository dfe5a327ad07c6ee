-- Shared pacing buckets and their queues: bucket.py's GCRA and scheduler.py's order, run atomically
-- inside Redis.
--
-- Times are integer microseconds from the Redis server's clock (TIME), so replica clocks never
-- matter. Keys of one home bucket share its cluster hash slot (the caller adds a {tag}); KEYS[i] is
-- a bucket's hash (tat, paused, o and bar (see "Charge keys and refunds" below), and for a home
-- bucket: v0..v2 class virtual times, seq); beside it, any bucket K has its refund book:
--   K:c        zset   the keys of its last BOOK charges (member = score = key)
--   K:d        hash   key -> that charge's debt (see below)
-- The queue keys hang off a home bucket's name H:
--   H:q<c>     zset   calls queued in class c: member "seq|replica|arrival|tenant", score = start tag
--   H:f<c>     hash   tenant -> last finish tag in class c
--   H:b        hash   member -> its own buckets and permits (msgpack {{{key, interval, tolerance}, ..},
--                     permits key or '', limit}): a queued call is charged on its buckets at its
--                     cost, whoever's poll grants it. Those keys share the home bucket's hash slot
--                     (same {tag}), so naming them is safe.
--   P          zset   a credential's max_concurrency leases (permits.lua's format: member = permit
--                     id, score = expiry in ms): the head of the queue takes one with its slot.
--   H:r        hash   replica -> its lease expiry (µs); a replica's calls count only while it lives
--   H:s        hash   replica -> when it was told to poll next (µs): past that by ABSENT, its places
--                     are passed over (not granted: it could not collect them), in place
--   H:g:<rep>  hash   member -> "tag,slot,key_1,..": granted calls waiting for their replica to collect
-- ARGV[1] is the operation, ARGV[2] a fixed now for tests ('' in production: TIME); then:
--   enter   n, catchup, ahead, replica, lease, then per call: home index, nb, per bucket (index, interval,
--           tolerance), class, tenant, step, max_wait, place, tag (place '': a new arrival; else the
--           member of a grant given back late, which rejoins at its old tag: see start_tag below),
--           permits index (0: no max_concurrency), limit
--           -> {now, {1, slot, key_1..key_nb, member} | {0, retry_after} | {2, member, wake}, ...}
--   poll    home index, catchup, ahead, replica, lease, members to cancel...
--           -> {now, wake, {member, "tag,slot,key..", ...}, depth_0, depth_1, depth_2}
--   release nb, then per bucket: index, interval, key                -> {now}
--
-- Charge keys and refunds. A charge's key is the bucket's tat right after it plus o, the total
-- refunded so far: keys strictly increase in charge order and a refund never makes two alike. Its
-- debt is d = (tat before it) - (its slot): how far ahead of the bucket's due time it was granted.
-- Since the book last restarted (a pause), tat is exactly the GCRA state of the charges held. A
-- slot given back unused (its caller woke too late, see shared_queue.py) is taken out of that
-- history, exactly: without charge j the tat after it is lower by L = I_j + max(0, -d_j) (what j
-- added), and each later charge k, its tat before being L lower, ends min(L, max(0, d_k)) lower
-- (it was granted at its slot either way) and keeps d_k - L of debt. So tat - L, L carried through
-- every later charge, is the GCRA state of the history without j: every slot granted since still
-- conforms (its tat before only got smaller), and nothing is refunded that a later charge used (a
-- later charge granted at the bucket's due time stops the refund there). The book holds the debt
-- of each of the last BOOK charges; a slot given back later than that, or charged before a pause
-- (which restarts the book; nothing charged before it is refunded: 'bar'), stays lost, the bound
-- first. So tat is never below the GCRA's over the slots sent, and the bound is the GCRA's (a test
-- checks this on random histories against a recomputation).
--   pause   index, tolerance, seconds_us                             -> {now, paused}
--   state   index                                                    -> {now, tat, paused, depth_0..2}

local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local op = ARGV[1]
local KEEP_MS = 60000
local MAX_GRANTS = 1000 -- grants (and dead calls dropped) per script call: keeps each call short
local PERMIT_POLL = 20000 -- µs: how soon to look again when the head waits for a permit (freed anywhere)
local BOOK = 64 -- charges per bucket whose debt is kept (a slot given back later than that stays lost)
local ABSENT = 50000 -- µs a replica may poll later than told before its places are passed over
local SCAN = 64 -- places per class looked at for one of a replica that polls
local lease_ms = 0 -- a permit's lease: the replica lease of the script call (renewed like permits.lua's)

local function fmt(x) return string.format('%.0f', x) end

-- A bucket is {key, interval, tolerance}: by its name, since a queued call's buckets are not those of
-- the script call that grants it.
local function load(key)
  local v = redis.call('HMGET', key, 'tat', 'paused')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end

-- Keep a bucket's key (and its refund book) only as long as its state matters.
local function touch(key, tat, paused)
  local ms = math.floor((math.max(tat, paused) - now) / 1000) + KEEP_MS
  redis.call('PEXPIRE', key, ms)
  redis.call('PEXPIRE', key .. ':c', ms)
  redis.call('PEXPIRE', key .. ':d', ms)
end

local function restart_book(key) redis.call('DEL', key .. ':c', key .. ':d') end

local function qkey(h, c) return KEYS[h] .. ':q' .. c end
local function fkey(h, c) return KEYS[h] .. ':f' .. c end
local function bkey(h) return KEYS[h] .. ':b' end

-- Parse "index, interval, tolerance" triples from ARGV[pos..]; returns the buckets and the next position.
local function buckets_at(pos)
  local nb, bs = tonumber(ARGV[pos]), {}
  pos = pos + 1
  for b = 1, nb do
    bs[b] = {KEYS[tonumber(ARGV[pos])], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])}
    pos = pos + 3
  end
  return bs, pos
end

-- The earliest instant every bucket conforms (bucket.py: tat - tolerance, and no earlier than a pause).
local function due_of(bs)
  local due = 0
  for _, b in ipairs(bs) do
    local tat, paused = load(b[1])
    due = math.max(due, tat - b[3], paused)
  end
  return due
end

-- bucket.take: charge slot in every bucket; returns "slot,key_1,..,key_nb" and the keys (see
-- "Charge keys and refunds" above for the key and the refund book kept here).
local function take(bs, slot)
  local keys, text = {}, fmt(slot)
  for b, spec in ipairs(bs) do
    local v = redis.call('HMGET', spec[1], 'tat', 'paused', 'o')
    local before, paused, o = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
    local tat = math.max(before, slot) + spec[2]
    local debt, key = before - slot, fmt(tat + o)
    redis.call('HSET', spec[1], 'tat', fmt(tat))
    redis.call('ZADD', spec[1] .. ':c', tat + o, key)
    redis.call('HSET', spec[1] .. ':d', key, fmt(debt))
    if redis.call('ZCARD', spec[1] .. ':c') > BOOK then
      redis.call('HDEL', spec[1] .. ':d', redis.call('ZPOPMIN', spec[1] .. ':c')[1])
    end
    touch(spec[1], tat, paused)
    keys[b] = tat + o
    text = text .. ',' .. key
  end
  return text, keys
end

-- Take charge `charged` (interval iv) out of bucket `key`'s history, exactly (see "Charge keys and
-- refunds" above); a charge the book does not hold stays charged.
local function refund(key, charged, iv)
  local v = redis.call('HMGET', key, 'tat', 'paused', 'o', 'bar')
  local tat, paused, o, bar = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
  local debt = tonumber(redis.call('HGET', key .. ':d', charged))
  if debt == nil or tonumber(charged) < bar then return end
  redis.call('ZREM', key .. ':c', charged)
  redis.call('HDEL', key .. ':d', charged)
  local lower = iv + math.max(0, -debt)
  local later = redis.call('ZRANGEBYSCORE', key .. ':c', '(' .. charged, '+inf')
  local debts = #later > 0 and redis.call('HMGET', key .. ':d', unpack(later)) or {}
  for i, k in ipairs(later) do
    if lower <= 0 then break end
    local d = tonumber(debts[i])
    redis.call('HSET', key .. ':d', k, fmt(d - lower))
    lower = math.min(lower, math.max(0, d))
  end
  redis.call('HSET', key, 'tat', fmt(tat - lower), 'o', fmt(o + lower))
  touch(key, tat - lower, paused)
end

local function depth(h, c) return redis.call('ZCARD', qkey(h, c)) end

-- max_concurrency (permits.lua's lease set): a permit is free while fewer than limit leases live.
local function permit_free(pkey, limit)
  if pkey == '' then return true end
  redis.call('ZREMRANGEBYSCORE', pkey, '-inf', math.floor(now / 1000))
  return redis.call('ZCARD', pkey) < limit
end

local function take_permit(pkey, id)
  if pkey == '' then return end
  redis.call('ZADD', pkey, math.floor(now / 1000) + lease_ms, id)
  redis.call('PEXPIRE', pkey, math.max(redis.call('PTTL', pkey), lease_ms))
end

-- A class that runs empty restarts its virtual time and tenant table (scheduler.py does the same).
local function left(h, c, member)
  redis.call('ZREM', qkey(h, c), member)
  redis.call('HDEL', bkey(h), member)
  if depth(h, c) == 0 then
    redis.call('DEL', fkey(h, c))
    redis.call('HSET', KEYS[h], 'v' .. c, 0)
  end
end

local function lease_of(h, rep, cache)
  if cache[rep] == nil then cache[rep] = tonumber(redis.call('HGET', KEYS[h] .. ':r', rep) or '0') end
  return cache[rep]
end

-- Whether replica r polls as told: by the wake it was last told (H:s), give or take ABSENT. The
-- replica of this script call does.
local function present(h, r, rep, seen)
  if r == rep then return true end
  if seen[r] == nil then seen[r] = tonumber(redis.call('HGET', KEYS[h] .. ':s', r) or '0') end
  return now <= seen[r] + ABSENT
end

-- The next place to grant: the first, in the highest non-empty class, of a replica that polls as
-- told (among the first SCAN of its class: the head alone, unless its replica does not); places of
-- replicas whose lease ran out are dropped on the way. Returns its class, member and start tag, or
-- nil and whether anyone waits.
local function next_place(h, rep, leases, seen)
  local waiting = false
  for c = 0, 2 do
    local first, last = 0, 0
    while first <= last do
      local heads = redis.call('ZRANGE', qkey(h, c), first, last, 'WITHSCORES')
      if #heads == 0 then break end
      local dropped = 0
      for i = 1, #heads, 2 do
        local member = heads[i]
        local r = string.match(member, '^%d+|([^|]+)|')
        if lease_of(h, r, leases) < now then
          left(h, c, member)
          dropped = dropped + 1 -- the places after it move up one
        else
          waiting = true
          if present(h, r, rep, seen) then return c, member, tonumber(heads[i + 1]) end
        end
      end
      first, last = last + 1 - dropped, SCAN - 1 - dropped
    end
  end
  return nil, waiting
end

-- Grant every slot due before now + ahead to the next place (scheduler.py's order, passing over the
-- places of a replica that has not polled since it was due to: they keep their place, and the
-- slots go to calls that will be sent), charged on its own buckets, into the owner's collection
-- hash. Returns the instant the next grant can be made (0: nobody waits).
local function grant(h, catchup, ahead, rep)
  local leases, seen = {}, {}
  for _ = 1, MAX_GRANTS do
    local c, member, start = next_place(h, rep, leases, seen)
    if c == nil then return member and now + PERMIT_POLL or 0 end -- member: whether anyone waits
    local r, arrival = string.match(member, '^%d+|([^|]+)|(%d+)|')
    local bs, pkey, limit = cmsgpack.unpack(redis.call('HGET', bkey(h), member))
    local slot = math.max(due_of(bs), tonumber(arrival), now - catchup)
    if slot > now + ahead then return slot - ahead end
    if not permit_free(pkey, limit) then return now + PERMIT_POLL end -- strict order: the head waits
    take_permit(pkey, member)
    local virtual = math.max(tonumber(redis.call('HGET', KEYS[h], 'v' .. c) or '0'), start)
    redis.call('HSET', KEYS[h], 'v' .. c, fmt(virtual))
    left(h, c, member)
    redis.call('HSET', KEYS[h] .. ':g:' .. r, member, fmt(start) .. ',' .. take(bs, slot))
    redis.call('PEXPIRE', KEYS[h] .. ':g:' .. r, KEEP_MS)
  end
  return now
end

-- The replica of this call will poll by `wake` (0: it has nothing queued here).
local function told(h, rep, wake)
  redis.call('HSET', KEYS[h] .. ':s', rep, fmt(math.max(wake, now)))
end

-- A replica that queues or polls keeps its calls alive for another lease; the queue keys live as
-- long as anyone does.
local function renew(h, rep, lease)
  redis.call('HSET', KEYS[h] .. ':r', rep, fmt(now + lease))
  local ms = math.floor(lease / 1000) + KEEP_MS
  redis.call('PEXPIRE', KEYS[h] .. ':r', ms)
  redis.call('PEXPIRE', KEYS[h] .. ':s', ms)
  redis.call('PEXPIRE', bkey(h), ms)
  for c = 0, 2 do
    redis.call('PEXPIRE', qkey(h, c), ms)
    redis.call('PEXPIRE', fkey(h, c), ms)
  end
end

-- The start tag of a call (scheduler.py's push and rejoin): a new arrival's is max(V, its tenant's
-- last finish). A late grant given back rejoins with its old member (sequence, arrival) at
-- min(its old tag, V), so it is the head again, ahead of every call that arrived after it (V is 0
-- if its class ran empty since). Its tenant's finish already counts it.
local function start_tag(h, c, tenant, place, tag)
  local virtual = tonumber(redis.call('HGET', KEYS[h], 'v' .. c) or '0')
  if place ~= '' then return math.min(tag, virtual) end
  return math.max(virtual, tonumber(redis.call('HGET', fkey(h, c), tenant) or '0'))
end

local function enter_one(pos, catchup, lookahead, rep)
  local h = tonumber(ARGV[pos])
  local bs
  bs, pos = buckets_at(pos + 1)
  local c, tenant, step, max_wait = tonumber(ARGV[pos]), ARGV[pos + 1], tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
  local place, tag = ARGV[pos + 4], tonumber(ARGV[pos + 5])
  local pidx, limit = tonumber(ARGV[pos + 6]), tonumber(ARGV[pos + 7])
  local pkey = pidx > 0 and KEYS[pidx] or ''
  pos = pos + 8
  grant(h, catchup, lookahead, rep)
  -- A late grant rejoining gave its slot back but kept its permit's lease until now (redis.py's
  -- _give_back_and_rejoin), so no call behind it could take that permit in between.
  if place ~= '' and pkey ~= '' then redis.call('ZREM', pkey, place) end
  local due = due_of(bs)
  if depth(h, 0) + depth(h, 1) + depth(h, 2) == 0 and due <= now and permit_free(pkey, limit) then
    local _, keys = take(bs, now)
    local out = {1, now}
    for _, k in ipairs(keys) do out[#out + 1] = k end
    -- its place (tag 0: nobody waits) should it have to give the slot back, and its permit's id
    local member = place
    if member == '' then
      local seq = redis.call('HINCRBY', KEYS[h], 'seq', 1)
      member = string.format('%016d|%s|%s|%s', seq, rep, fmt(now), tenant)
    end
    take_permit(pkey, member)
    out[#out + 1] = member
    return out, pos
  end
  local start = start_tag(h, c, tenant, place, tag)
  local before = redis.call('ZCOUNT', qkey(h, c), '-inf', fmt(start))
  for k = 0, c - 1 do before = before + depth(h, k) end
  local interval = 0
  for _, b in ipairs(bs) do interval = math.max(interval, b[2]) end
  local wait = math.max(0, due - now) + before * interval
  if wait > max_wait then return {0, wait}, pos end
  local member = place
  if member == '' then
    local seq = redis.call('HINCRBY', KEYS[h], 'seq', 1)
    member = string.format('%016d|%s|%s|%s', seq, rep, fmt(now), tenant)
    redis.call('HSET', fkey(h, c), tenant, fmt(start + step))
  end
  redis.call('ZADD', qkey(h, c), fmt(start), member)
  redis.call('HSET', bkey(h), member, cmsgpack.pack(bs, pkey, limit))
  local wake = math.max(due - lookahead, now)
  told(h, rep, wake)
  return {2, member, wake}, pos
end

if op == 'enter' then
  local catchup, ahead, rep, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  lease_ms = math.floor(lease / 1000)
  local out, pos = {now}, 8
  for _ = 1, tonumber(ARGV[3]) do
    renew(tonumber(ARGV[pos]), rep, lease)
    local one
    one, pos = enter_one(pos, catchup, ahead, rep)
    out[#out + 1] = one
  end
  return out
elseif op == 'poll' then
  local h = tonumber(ARGV[3])
  local catchup, ahead, rep, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  lease_ms = math.floor(lease / 1000)
  renew(h, rep, lease)
  for i = 8, #ARGV do
    for c = 0, 2 do
      if redis.call('ZSCORE', qkey(h, c), ARGV[i]) then left(h, c, ARGV[i]) break end
    end
  end
  local wake = grant(h, catchup, ahead, rep)
  told(h, rep, wake)
  local mine = KEYS[h] .. ':g:' .. rep
  local granted = redis.call('HGETALL', mine)
  redis.call('DEL', mine)
  return {now, fmt(wake), granted, depth(h, 0), depth(h, 1), depth(h, 2)}
elseif op == 'release' then
  local pos = 4
  for _ = 1, tonumber(ARGV[3]) do
    local key, iv, charged = KEYS[tonumber(ARGV[pos])], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
    pos = pos + 3
    refund(key, fmt(charged), iv)
  end
  return {now}
elseif op == 'pause' then
  local key, tol, span = KEYS[tonumber(ARGV[3])], tonumber(ARGV[4]), tonumber(ARGV[5])
  local tat, paused = load(key)
  paused = math.max(paused, now + span)
  tat = math.max(tat, now + span + tol)
  local o = tonumber(redis.call('HGET', key, 'o') or '0')
  redis.call('HSET', key, 'tat', fmt(tat), 'paused', fmt(paused), 'bar', fmt(tat + o + 1))
  restart_book(key)
  touch(key, tat, paused)
  return {now, paused}
elseif op == 'state' then
  local i = tonumber(ARGV[3])
  local tat, paused = load(KEYS[i])
  return {now, tat, paused, depth(i, 0), depth(i, 1), depth(i, 2)}
end
return redis.error_reply('unknown pacing operation')
