-- enqueue.lua: append one operation unless its op_id was already enqueued within the window, atomically.
-- KEYS[1] stream   KEYS[2] dedupe key of this op_id
-- ARGV[1] payload JSON   ARGV[2] op_id   ARGV[3] window (ms)
-- Returns {1, new stream id} when appended, {0, first stream id} for a duplicate within the window.
local first = redis.call('GET', KEYS[2])
if first then
  return {0, first}
end
local id = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1], 'op_id', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', tonumber(ARGV[3]))
return {1, id}
