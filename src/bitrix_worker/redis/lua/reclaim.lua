-- reclaim.lua: take over the entries left pending by dead consumers, whole consumers at a time.
-- KEYS[1] stream   KEYS[2] own entries hash (turns.lua)   KEYS[3] sent marks hash (id -> times sent)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] min idle ms   ARGV[4] start id   ARGV[5] count
-- Returns {next_start, {{id, deliveries, ident, whose, sent, {field, value, ...}}, ...}}; next_start is
-- '0-0' when the scan is done. The ident is the one claim.lua gave the entry (turns.lua derives both), so
-- the worker releases exactly the turn that is held. The delivery count and the number of times its batch
-- was actually sent (the worker marks that right before each request) let the worker dead-letter an entry
-- that keeps killing workers (poison) instead of looping forever, without counting the deliveries that
-- died before anything was sent.
--
-- A coalesced unit is several entries (one per operation) owned by one consumer. Claiming them COUNT at a
-- time (as XAUTOCLAIM does) can split a unit between two batches or two rescuers, which then run the pieces
-- of one key side by side and out of order. So every consumer seen idle in the scanned range is taken over
-- with all of its idle entries, in one step: a unit always moves whole.
local stream, own, sent, group, me = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local min_idle, start, count = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if start == '0-0' then start = '-' end
local scan = redis.call('XPENDING', stream, group, 'IDLE', min_idle, start, '+', count)
local nxt = '0-0'
if #scan >= count then nxt = '(' .. scan[#scan][1] end
local owners, ids = {}, {}
for _, p in ipairs(scan) do
  local owner = p[2]
  if not owners[owner] then
    owners[owner] = true
    local all = redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', 1000000, owner)
    for _, q in ipairs(all) do table.insert(ids, q[1]) end
  end
end
local out = {}
for i = 1, #ids, 500 do
  local part = {}
  for j = i, math.min(i + 499, #ids) do table.insert(part, ids[j]) end
  local claimed = redis.call('XCLAIM', stream, group, me, min_idle, unpack(part))
  for _, entry in ipairs(claimed) do
    if entry and entry ~= false then
      local id, flat = entry[1], entry[2]
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local deliveries = 1
      if #p > 0 then deliveries = p[1][4] end
      local fields = {}
      for k = 1, #flat, 2 do fields[flat[k]] = flat[k + 1] end
      local mine = whose(own, id, fields)
      local ident = derive(fields, mine)
      local times = tonumber(redis.call('HGET', sent, id) or '0') or 0
      table.insert(out, {id, deliveries, ident or '', mine, times, flat})
    end
  end
end
return {nxt, out}
