-- Renewing shared max_concurrency permits: one lease set (sorted set) per credential, in the
-- credential's cluster hash slot. member = a permit id, score = the lease's expiry in ms on the Redis
-- server's clock (TIME), so replica clocks never matter. pacing.lua grants the leases (with the
-- slot, in the queue's order); a lease nobody renews (its replica crashed) stops counting at its
-- expiry. The key expires with its last lease.
--   KEYS[1]  the lease set
--   renew    ARGV: 'renew', ttl_ms, member...         -> the members whose lease had lapsed

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]

local function drop_expired()
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end

-- Expire the key with its longest lease (replicas may use different TTLs).
local function touch()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
  end
end

local expiry = now + tonumber(ARGV[2])
drop_expired()
-- renew: XX never resurrects a lease that already expired (its permit may be someone else's now)
local lapsed = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', key, ARGV[i]) then
    redis.call('ZADD', key, 'XX', expiry, ARGV[i])
  else
    lapsed[#lapsed + 1] = ARGV[i]
  end
end
touch()
return lapsed
