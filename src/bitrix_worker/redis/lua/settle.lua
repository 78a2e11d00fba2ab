-- settle.lua: finish units of work atomically: ack + (nothing | schedule retry | dead-letter), and pass
-- each key's turn on when its last live reference goes.
-- KEYS[1] stream   KEYS[2] holds   KEYS[3] schedule zset   KEYS[4] schedule data hash
-- KEYS[5] dead-letter stream   KEYS[6] outcomes stream   KEYS[7] counters hash   KEYS[8] parked queues hash
-- KEYS[9] own entries hash (turns.lua)   KEYS[10] sent marks hash (reclaim.lua)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] (unused)   ARGV[4] outcomes maxlen (0 = off)
-- ARGV[5] handoff segment limit   ARGV[6] JSON list of settlements:
--   {ids = {stream ids}, ident = "deal:k" or "", action = "done"|"retry"|"dead",
--    delay_ms = n, origin = id, unit = "<json>"            (retry)
--    dead = {{field, value, ...}, ...}                     (dead: one entry per operation)
--    outcomes = {{field, value, ...}, ...}, counters = {name = n}}
-- KEYS[11] (optional) the portal's method-pause hash, ARGV[7] a JSON object of its fields to set: the
--   operating times the batch's answers reported (``MethodPauses.observe``), written here instead of by
--   one more round trip per request. Only passed when the hash sits in the stream's Cluster slot.
-- Returns one integer per settlement: 1 done, 0 lost (an id is no longer pending for this consumer:
-- another worker reclaimed it and now owns the outcome).
local stream, holds, schedule, sdata, dead, outcomes, counters, parked, own, sent =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local group, consumer = ARGV[1], ARGV[2]
local outcomes_max, seg_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local settlements = cjson.decode(ARGV[6])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The key's turn is free: first drop the waiter tokens at the head of its queue (every operation of the
-- key claimed before their owners is final now; turns.lua), then pass the turn to the next operation.
-- An operation that still waits for a referenced key takes the turn and waits in 'x|<ident>'; one with
-- refs goes alone; otherwise the next coalescible run goes back into the stream as one held unit.
local function handoff(ident)
  local head, tail = pq_bounds(parked, ident)
  local n = 0
  while head + n < tail do
    local item = cjson.decode(pq_get(parked, ident, head + n))
    if not item.t then break end
    token_done(stream, own, parked, item)
    n = n + 1
  end
  if n > 0 then
    pq_drop(parked, ident, head, n, tail)
    head = head + n
  end
  if head >= tail then return end
  local first = cjson.decode(pq_get(parked, ident, head))
  redis.call('HINCRBY', holds, ident, 1)
  if waits(parked, first.id) > 0 then
    pq_drop(parked, ident, head, 1, tail)
    redis.call('HSET', parked, 'x|' .. ident, cjson.encode(first))
    return
  end
  local members, has_update, open = {member_of(first)}, first.op == 'update', opens(first.op)
  n = 1
  while first.r == nil and n < seg_limit and head + n < tail do
    local item = cjson.decode(pq_get(parked, ident, head + n))
    if item.t or item.r or not joins(open, has_update, item.op) then break end
    table.insert(members, member_of(item))
    has_update = has_update or item.op == 'update'
    n = n + 1
  end
  pq_drop(parked, ident, head, n, tail)
  add_unit(stream, own, ident, members)
end

local function release(ident, n)
  if ident == '' or n == 0 then return end
  local left = redis.call('HINCRBY', holds, ident, -n)
  if left <= 0 then
    redis.call('HDEL', holds, ident)
    handoff(ident)
  end
end

local results = {}
for i, s in ipairs(settlements) do
  local ours = true
  for _, id in ipairs(s.ids) do
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    if #p == 0 or p[1][2] ~= consumer then ours = false break end
  end
  if not ours then
    results[i] = 0
  else
    for _, id in ipairs(s.ids) do
      redis.call('XACK', stream, group, id)
      redis.call('XDEL', stream, id)
      redis.call('HDEL', own, id)
      redis.call('HDEL', sent, id)
    end
    if s.action == 'retry' then
      redis.call('ZADD', schedule, now_ms + tonumber(s.delay_ms), s.origin)
      redis.call('HSET', sdata, s.origin, s.unit)
      release(s.ident, #s.ids - 1)
    else
      if s.action == 'dead' then
        for _, entry in ipairs(s.dead) do redis.call('XADD', dead, '*', unpack(entry)) end
      end
      release(s.ident, #s.ids)
    end
    if outcomes_max > 0 and s.outcomes then
      for _, entry in ipairs(s.outcomes) do
        redis.call('XADD', outcomes, 'MAXLEN', '~', outcomes_max, '*', unpack(entry))
      end
    end
    if s.counters then
      for name, n in pairs(s.counters) do redis.call('HINCRBY', counters, name, n) end
    end
    results[i] = 1
  end
end
if KEYS[11] and ARGV[7] and ARGV[7] ~= '' then
  local flat = {}
  for field, value in pairs(cjson.decode(ARGV[7])) do
    table.insert(flat, field)
    table.insert(flat, value)
  end
  if #flat > 0 then redis.call('HSET', KEYS[11], unpack(flat)) end
end
return results
