-- leases.lua: release, renew or confirm leases, each only if it still carries our fencing token.
-- KEYS = lease keys   ARGV[1] = token   ARGV[2] = 'release' | 'renew' | 'confirm'   ARGV[3] = ttl ms
-- 'release' and 'renew' return how many were released or renewed; 'confirm' renews like 'renew' and
-- returns one 1 (renewed) or 0 (lost) per key, in KEYS order: one call instead of a pipeline of scripts
-- (a Redis Cluster pipeline does not load scripts first). A lease that expired and was taken by another
-- worker is left alone: that worker owns the key now.
local n, each = 0, {}
for i, key in ipairs(KEYS) do
  each[i] = 0
  if redis.call('GET', key) == ARGV[1] then
    if ARGV[2] == 'release' then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    end
    n = n + 1
    each[i] = 1
  end
end
if ARGV[2] == 'confirm' then
  return each
end
return n
