-- reclaim.lua: take over entries left pending by a dead consumer, with their delivery counts.
-- KEYS[1] stream
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] min idle ms   ARGV[4] start id   ARGV[5] count
-- Returns {next_start, {{id, deliveries, {field, value, ...}}, ...}}. The delivery count lets the
-- worker dead-letter an entry that keeps killing workers (poison) instead of looping forever.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(r[2]) do
  local id = entry[1]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local deliveries = 1
  if #p > 0 then deliveries = p[1][4] end
  table.insert(out, {id, deliveries, entry[2]})
end
return {r[1], out}
