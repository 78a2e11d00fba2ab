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
-- last, 'e|<n>|<ident>' = the n-th entry (JSON {id, op, f}; plus r = 1 when the operation has refs and
-- w = the keys it waited for when claimed; or a waiter token {t, d}). O(1) per push and pop whatever the
-- ident. The same hash keeps the waits of cross-key references (below): 'w|<stream id>', 'x|<ident>' and
-- the counter 'n|waits'.
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
-- without touching any key's turn). A unit's ident was written by the worker itself. The third value is
-- the decoded payload (nil for a unit), for refs_of.
local function derive(fields, kind)
  if kind == 'unit' then return fields['ident'], 'unit', nil end
  local raw = fields['payload']
  if not raw or #raw > MAX_PAYLOAD_BYTES then return nil end
  local ok, p = pcall(cjson.decode, raw)
  if not ok or type(p) ~= 'table' then return nil end
  local entity, key, op = p['entity'], p['key'], p['op']
  if type(entity) ~= 'string' or type(key) ~= 'string' or type(op) ~= 'string' then return nil end
  if #entity + #key > MAX_IDENT_BYTES or not valid_utf8(entity) or not valid_utf8(key) then return nil end
  return entity .. ':' .. key, op, p
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

-- Cross-key references. A value anywhere inside an operation's `fields` or `products` may be exactly
-- {"$ref": "<entity>:<key>"}: "the Bitrix24 id of that key". Such an operation X (of key D) is handed to a
-- worker only after every operation of each referenced key K that entered the stream before X has reached
-- its final outcome (applied, skipped or dead-lettered; a scheduled retry is not final).
--
-- Waiter tokens: when X is claimed, every referenced key K that is held right then (something of K that
-- entered before X is in flight, scheduled, parked or itself waiting) gets a token {t = X's id, d = D}
-- appended to its parked queue, and 'w|<X id>' counts the tokens still out. A token sits behind exactly
-- the operations of K that were claimed before X, so when K's turn reaches it (handoff in settle.lua) all
-- of them are final: the token is dropped and the count goes down. Meanwhile X keeps D's order as any
-- operation does: parked in D's queue while D is held; and when it is D's turn but X still waits, X takes
-- D's turn anyway and sits in 'x|<D>' (at most one per key, since it holds D's turn), so D's later
-- operations wait behind it. The last token sends X into the stream as a held unit (it already holds D).
-- Tokens only ever point from a later entry to earlier ones, so waits cannot form a cycle. (One harmless
-- exception: an update of K read in the same claim right after X may still join K's run in flight, and X
-- then waits for it too; it has no refs, so it waits for nothing itself.) A ref to a key that is not held
-- costs nothing but one HGET. Later operations of K never wait for X.
--
-- Only well-formed refs to another key count here; a malformed ref or a ref to the operation's own key is
-- ignored (the worker dead-letters such an operation as poison, which releases its turn like any outcome).
-- An operation with refs never coalesces with its neighbours: it travels alone.
local MAX_REF_DEPTH = 32  -- boundedjson.MAX_DEPTH: a payload nested deeper is poison, never sent

-- The ident a value refers to, or nil: exactly one key, "$ref", whose value looks like an ident.
local function ref_ident(v)
  local r = v['$ref']
  if type(r) ~= 'string' or #r > MAX_IDENT_BYTES + 1 then return nil end
  local n = 0
  for _ in pairs(v) do
    n = n + 1
    if n > 1 then return nil end
  end
  local colon = string.find(r, ':', 1, true)
  if not colon or colon == 1 or colon == #r or not valid_utf8(r) then return nil end
  return r
end

-- The distinct keys (other than `self`) a decoded payload refers to, sorted (deterministic order).
local function refs_of(p, self)
  local seen, list = {}, {}
  local walk
  walk = function(v, depth)
    if type(v) ~= 'table' or depth > MAX_REF_DEPTH then return end
    local r = ref_ident(v)
    if r then
      if r ~= self and not seen[r] then
        seen[r] = true
        table.insert(list, r)
      end
      return
    end
    for _, child in pairs(v) do walk(child, depth + 1) end
  end
  if type(p) == 'table' then
    walk(p['fields'], 0)
    walk(p['products'], 0)
  end
  table.sort(list)
  return list
end

-- The referenced keys that are held right now (X must wait for them).
local function busy_refs(holds, refs)
  local busy = {}
  for _, k in ipairs(refs) do
    if tonumber(redis.call('HGET', holds, k) or '0') > 0 then table.insert(busy, k) end
  end
  return busy
end

-- X (stream id `id`, key `ident`) waits for each key in `busy`: a token at the end of each one's queue.
-- 'n|waits' counts the operations waiting (read by the status gauges in O(1)); gone at zero.
local function wait_on(parked, id, ident, busy)
  for _, k in ipairs(busy) do pq_push(parked, k, cjson.encode({t = id, d = ident})) end
  redis.call('HSET', parked, 'w|' .. id, #busy)
  redis.call('HINCRBY', parked, 'n|waits', 1)
end

-- A parked item ({id, op, f}) as a member of a unit.
local function member_of(item)
  local f = {}
  for i = 1, #item.f, 2 do f[item.f[i]] = item.f[i + 1] end
  return {origin = item.id, payload = f['payload'], history = f['history']}
end

-- Put a held unit of `ident` into the stream, recorded as the worker's own entry. The caller accounts
-- for its hold.
local function add_unit(stream, own, ident, members)
  local unit = cjson.encode({ident = ident, members = members, failures = 0, bounces = 0})
  local id = redis.call('XADD', stream, '*', 'unit', unit, 'held', '1', 'ident', ident)
  redis.call('HSET', own, id, 'unit')
end

-- A token reached the head of a free key's queue: its owner waits for one key fewer. When that was the
-- last, the owner goes into the stream if it already holds its own key's turn ('x|'); otherwise it is
-- still parked in its key's queue and goes when its turn comes (handoff sees no 'w|' left).
local function token_done(stream, own, parked, tok)
  local left = redis.call('HINCRBY', parked, 'w|' .. tok.t, -1)
  if left > 0 then return end
  redis.call('HDEL', parked, 'w|' .. tok.t)
  if redis.call('HINCRBY', parked, 'n|waits', -1) <= 0 then redis.call('HDEL', parked, 'n|waits') end
  local raw = redis.call('HGET', parked, 'x|' .. tok.d)
  if not raw then return end
  local item = cjson.decode(raw)
  if item.id ~= tok.t then return end
  redis.call('HDEL', parked, 'x|' .. tok.d)
  add_unit(stream, own, tok.d, {member_of(item)})
end

-- How many references X still waits for.
local function waits(parked, id)
  return tonumber(redis.call('HGET', parked, 'w|' .. id) or '0') or 0
end
