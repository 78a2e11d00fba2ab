-- release_leases.lua: delete each lease only if it still carries our fencing token.
-- KEYS = lease keys   ARGV[1] = token
-- Returns how many were released (a lease that expired and was taken by another worker is left alone).
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
