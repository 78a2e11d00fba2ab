-- turns.lua: shared by claim.lua and settle.lua (prepended when the scripts are loaded). Two things are
-- written once here: the coalescing rule, and the parked queues that hold a key's operations while an
-- earlier one of the same key is in flight or scheduled.
--
-- Coalescing: a run of operations of one key travels as one unit when it starts with a create, update or
-- upsert and every later member is an update, or an upsert before any update joined (an upsert after an
-- update could need a create the update cannot do). A delete never joins or is joined.
local function opens(kind)
  return kind == 'create' or kind == 'update' or kind == 'upsert'
end

local function joins(open, has_update, kind)
  if not open then return false end
  if kind == 'update' then return true end
  if kind == 'upsert' then return not has_update end
  return false
end

-- Parked queues: every key's queue lives in ONE hash (declared in KEYS, so Redis Cluster routes and
-- migrates it like any other key): 'h|<ident>' = index of the first entry, 't|<ident>' = index after the
-- last, 'e|<n>|<ident>' = the n-th entry (JSON {id, op, f}). O(1) per push and pop whatever the ident.
local function pq_bounds(parked, ident)
  local b = redis.call('HMGET', parked, 'h|' .. ident, 't|' .. ident)
  return tonumber(b[1]) or 0, tonumber(b[2]) or 0
end

local function pq_push(parked, ident, item)
  local tail = redis.call('HINCRBY', parked, 't|' .. ident, 1) - 1
  redis.call('HSET', parked, 'e|' .. tail .. '|' .. ident, item)
end

local function pq_get(parked, ident, n)
  return redis.call('HGET', parked, 'e|' .. n .. '|' .. ident)
end

-- Drop the first `count` entries; forget the queue when it is empty.
local function pq_drop(parked, ident, head, count, tail)
  for n = head, head + count - 1 do redis.call('HDEL', parked, 'e|' .. n .. '|' .. ident) end
  if head + count >= tail then
    redis.call('HDEL', parked, 'h|' .. ident, 't|' .. ident)
  else
    redis.call('HSET', parked, 'h|' .. ident, head + count)
  end
end
