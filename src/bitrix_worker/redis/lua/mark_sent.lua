-- mark_sent.lua: right before a request leaves for the portal, count one send for each entry of its batch
-- that this consumer still owns (an entry another worker reclaimed meanwhile is theirs to count).
-- KEYS[1] stream   KEYS[2] sent marks hash (id -> times sent; the field goes when the entry is acked)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3..] stream ids
-- Returns how many were marked.
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('HINCRBY', KEYS[2], id, 1)
    n = n + 1
  end
end
return n
