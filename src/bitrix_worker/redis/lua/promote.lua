-- promote.lua: move retries that are due from the schedule back into the stream, atomically.
-- KEYS[1] schedule zset (origin id -> due ms)   KEYS[2] schedule data hash (origin id -> unit JSON)
-- KEYS[3] stream   KEYS[4] own entries hash (turns.lua: the re-added unit is recorded as the worker's)
-- ARGV[1] maximum number to move
-- Returns the number moved. Uses the Redis server clock so that hosts with skewed clocks agree.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, origin in ipairs(due) do
  local unit = redis.call('HGET', KEYS[2], origin)
  if unit then
    local ident = cjson.decode(unit)['ident']
    local id = redis.call('XADD', KEYS[3], '*', 'unit', unit, 'held', '1', 'ident', ident)
    redis.call('HSET', KEYS[4], id, 'unit')
    redis.call('HDEL', KEYS[2], origin)
  end
  redis.call('ZREM', KEYS[1], origin)
end
return #due
