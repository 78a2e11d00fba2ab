-- leases.lua: release or renew leases, each only if it still carries our fencing token.
-- KEYS = lease keys   ARGV[1] = token   ARGV[2] = 'release' | 'renew'   ARGV[3] = ttl ms (renew)
-- Returns how many were released or renewed. A lease that expired and was taken by another worker is
-- left alone: that worker owns the key now.
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if ARGV[2] == 'renew' then
      redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    else
      redis.call('DEL', key)
    end
    n = n + 1
  end
end
return n
