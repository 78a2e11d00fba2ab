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

-- Whose entry is it, and which key's turn does it take? Written once here for claim.lua and reclaim.lua,
-- so that an entry is always given the same ident, and the worker never derives one itself.
--
-- The worker's own entries (retry units from settle/promote, hand-offs, replays) are recorded in the
-- `own` hash ('<stream id>' -> 'unit' | 'replay') when they are added and forgotten when they are
-- acknowledged; a producer cannot write there, so no field it adds (`unit`, `held`, `ident`, `history`,
-- anything) is ever read as the worker's. '~since' is the newest stream id when this version first
-- started: entries up to it were written by an older version, which marked its own entries with fields;
-- for them the old rule still holds.
local MAX_PAYLOAD_BYTES = 1048576  -- operations.MAX_PAYLOAD_BYTES: larger payloads are poison, unread here
local MAX_IDENT_BYTES = 1024       -- a valid key is at most 200 characters; longer ones are poison anyway

-- Canonical key encoding: an ident is made only of valid UTF-8 (no overlong forms, no UTF-16 surrogates,
-- nothing above U+10FFFF), exactly the bytes Python's strict UTF-8 codec accepts, so the ident the worker
-- passes back is byte for byte the one held here. cjson passes raw bytes through unchecked.
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then
      len = 1
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      return false
    end
    for j = 1, len - 1 do
      local b = string.byte(s, i + j)
      if b == nil then return false end
      if j == 1 then
        if b < lo or b > hi then return false end
      elseif b < 0x80 or b > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

-- a > b for stream ids "<ms>-<seq>" (decimal strings without leading zeros; compared exactly, not as
-- doubles)
local function id_after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return true end
  if #am ~= #bm then return #am > #bm end
  if am ~= bm then return am > bm end
  if #as ~= #bs then return #as > #bs end
  return as > bs
end

-- '' (a producer's entry), 'unit' (a retry unit or hand-off) or 'replay' (re-added from the dead letters)
local function whose(own, id, fields)
  local kind = redis.call('HGET', own, id)
  if kind then return kind end
  local since = redis.call('HGET', own, '~since')
  if since and not id_after(id, since) then
    if fields['held'] == '1' then return 'unit' end
    if fields['history'] or fields['replayed_from'] then return 'replay' end
  end
  return ''
end

-- The ident (entity:key) and op of an entry, or nil when it has none (the worker then dead-letters it
-- without touching any key's turn). A unit's ident was written by the worker itself.
local function derive(fields, kind)
  if kind == 'unit' then return fields['ident'], 'unit' end
  local raw = fields['payload']
  if not raw or #raw > MAX_PAYLOAD_BYTES then return nil end
  local ok, p = pcall(cjson.decode, raw)
  if not ok or type(p) ~= 'table' then return nil end
  local entity, key, op = p['entity'], p['key'], p['op']
  if type(entity) ~= 'string' or type(key) ~= 'string' or type(op) ~= 'string' then return nil end
  if #entity + #key > MAX_IDENT_BYTES or not valid_utf8(entity) or not valid_utf8(key) then return nil end
  return entity .. ':' .. key, op
end

-- The fields a parked entry keeps: the payload, and the history only when the worker wrote it.
local function kept_fields(fields, kind)
  local f = {'payload', fields['payload']}
  if kind == 'replay' and fields['history'] then
    table.insert(f, 'history')
    table.insert(f, fields['history'])
  end
  return f
end
