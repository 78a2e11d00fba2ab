-- migrate_parked.lua: move one key's parked list of an older version ({stream}:parked:<ident>, a LIST) to
-- the front of its queue in the parked hash (turns.lua), keeping stream order. Run once at start.
-- KEYS[1] old list   KEYS[2] parked queues hash   ARGV[1] ident
-- Returns how many entries moved.
local old, parked, ident = KEYS[1], KEYS[2], ARGV[1]
local items = redis.call('LRANGE', old, 0, -1)
if #items == 0 then return 0 end
local head, tail = pq_bounds(parked, ident)
for i = #items, 1, -1 do
  head = head - 1
  redis.call('HSET', parked, 'e|' .. head .. '|' .. ident, items[i])
end
redis.call('HSET', parked, 'h|' .. ident, head, 't|' .. ident, tail)
redis.call('DEL', old)
return #items
