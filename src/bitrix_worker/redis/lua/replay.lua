-- replay.lua: move one dead-letter entry back into the operation stream, atomically.
-- KEYS[1] dead-letter stream   KEYS[2] operation stream   KEYS[3] own entries hash (turns.lua)
-- ARGV[1] dead-letter entry id   ARGV[2] history (JSON list, from the entry's error)
-- ARGV[3] optional: a corrected payload that replaces the producer's (the caller validated it and put the
--         original into the history)
-- Returns the new stream id, or false when the entry is gone (purged, or replayed by someone else).
--
-- Checking and deleting inside one script means two operators replaying the same entry cannot both
-- enqueue it, and the entry never leaves the dead-letter stream unless the XADD happened.
-- The producer's fields are copied unchanged (normally just `payload`); `error` and any old `history`
-- are replaced by the history the worker reads as prior attempts.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local flat = found[1][2]
local fields = {}
local edited = ARGV[3] ~= nil and ARGV[3] ~= ''
for i = 1, #flat, 2 do
  local name = flat[i]
  if name ~= 'error' and name ~= 'history' and name ~= 'replayed_from' and not (edited and name == 'payload') then
    table.insert(fields, name)
    table.insert(fields, flat[i + 1])
  end
end
if edited then
  table.insert(fields, 'payload')
  table.insert(fields, ARGV[3])
end
table.insert(fields, 'history')
table.insert(fields, ARGV[2])
table.insert(fields, 'replayed_from')
table.insert(fields, ARGV[1])
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[3], id, 'replay')  -- its `history` is the worker's, not a producer's field
redis.call('XDEL', KEYS[1], ARGV[1])
return id
