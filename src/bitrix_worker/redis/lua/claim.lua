-- claim.lua: read new entries for this consumer and give each key its turn, atomically.
-- KEYS[1] stream   KEYS[2] holds hash (ident -> live references)   KEYS[3] parked queues hash (turns.lua)
-- KEYS[4] own entries hash (turns.lua)   KEYS[5] (optional) the fencing-token counter (leases.py): when
-- this call owns entries it takes the batch's token by INCR, saving the batch one round trip
-- ARGV[1] group    ARGV[2] consumer   ARGV[3] count (entries owned at most; up to 4x as many may be read,
-- since parked ones take no place)
-- Returns {owned, last_id, token} (token 0 when nothing was owned or KEYS[5] is absent): owned = {{id, ident, {field, value, ...}, whose}, ...} (ident '' when the
-- entry has none; whose as in turns.lua); last_id is the newest entry
-- in the stream (or '0-0'), for a blocking XREAD that cannot miss an entry added after this call; when
-- this call read entries but parked all of them, it is the last id read, so that XREAD returns at once
-- while unread entries remain instead of blocking until something newer than the newest arrives.
--
-- A key (ident = entity:key) is "held" while any operation of it is in flight or scheduled for retry.
-- An entry whose key is held is acknowledged here and appended to the key's parked queue, in stream order;
-- it re-enters the stream when the key's turn is released (settle.lua). Operations that directly follow an
-- owned one of the same key in this read join it when the coalescing rule allows (turns.lua); anything
-- else waits. An entry that refers to another key waits, in addition, for that key's earlier operations
-- (turns.lua, "Cross-key references").
local stream, holds, parked, own = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, count = ARGV[1], ARGV[2], ARGV[3]

local function extend(seg, kind)
  if seg == nil then return {open = opens(kind), has_update = (kind == 'update')} end
  seg.has_update = seg.has_update or kind == 'update'
  return seg
end

-- Take the entry out of the stream: it now lives in the parked hash (a key's queue, or 'x|').
local function unstream(id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  redis.call('HDEL', own, id)
end

local function closed() return {open = false, has_update = false} end  -- a run nothing may join

local owned = {}
local last_read = nil
local seg, parked_here = {}, {}
-- Read until `count` entries are owned: entries parked on the way (their key is held, or they wait for a
-- referenced key) do not take a place in the batch, so a stream where every other entry waits (a contact,
-- then the deal referring to it) still fills whole batches. Bounded: at most READ_FACTOR x count entries
-- are read per call.
local READ_FACTOR = 4
local want, read = tonumber(count), 0
while #owned < want and read < want * READ_FACTOR do
  local n = math.min(want - #owned, want * READ_FACTOR - read)
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n, 'STREAMS', stream, '>')
  -- fakeredis (the demo's last-resort backend) answers {stream, entries} without the outer list
  local entries = nil
  if type(res) == 'table' and #res > 0 then entries = type(res[1]) == 'table' and res[1][2] or res[2] end
  if type(entries) ~= 'table' or #entries == 0 then break end
  read = read + #entries
  for _, entry in ipairs(entries) do
    local id, flat = entry[1], entry[2]
    last_read = id
    local fields = {}
    for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    local mine = whose(own, id, fields)
    local ident, kind, decoded = derive(fields, mine)
    local take = true
    if kind == 'unit' then
      if ident then seg[ident] = closed() end
    elseif ident then
      -- cross-key references (turns.lua): computed before this entry touches its own key, so an earlier
      -- entry of a referenced key taken in this same read already counts as held
      local refs = refs_of(decoded, ident)
      local busy = busy_refs(holds, refs)
      if parked_here[ident] then
        take = false
      elseif #refs == 0 and seg[ident] ~= nil and joins(seg[ident].open, seg[ident].has_update, kind) then
        take = true
      elseif tonumber(redis.call('HGET', holds, ident) or '0') > 0 then
        take = false
      else
        seg[ident] = nil
      end
      local item = {id = id, op = kind, f = kept_fields(fields, mine)}
      if #refs > 0 then item.r = 1 end
      if #busy > 0 then
        item.w = busy
        wait_on(parked, id, ident, busy)
      end
      if take and #busy > 0 then
        -- its key's turn, but a referenced key is busy: hold the turn and wait in 'x|'
        redis.call('HINCRBY', holds, ident, 1)
        redis.call('HSET', parked, 'x|' .. ident, cjson.encode(item))
        seg[ident] = closed()
        unstream(id)
        take = false
      elseif take then
        redis.call('HINCRBY', holds, ident, 1)
        seg[ident] = extend(seg[ident], kind)
        if #refs > 0 then seg[ident] = closed() end
      else
        parked_here[ident] = true
        pq_push(parked, ident, cjson.encode(item))
        unstream(id)
      end
    end
    if take then table.insert(owned, {id, ident or '', flat, mine}) end
  end
end

local last = '0-0'
if #owned == 0 and last_read then
  last = last_read
elseif #owned == 0 then
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #newest > 0 then last = newest[1][1] end
end
local token = 0
if #owned > 0 and KEYS[5] then token = redis.call('INCR', KEYS[5]) end
return {owned, last, token}
