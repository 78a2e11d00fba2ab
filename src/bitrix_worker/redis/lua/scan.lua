-- scan.lua: read only. One bounded step of a filtered stream scan, so a search returns only the entries it
-- wants instead of shipping every entry to the client to be parsed and dropped there.
-- KEYS[1] stream
-- ARGV[1] 'rev' (newest first) or 'fwd'   ARGV[2] bound to start from (an id, '(id', '+' or '-')
-- ARGV[3] how many entries to read at most
-- ARGV[4...] filters, in pairs: field name, then 'eq:<value>' (the field equals value) or 'has:<text>'
--            (the field contains text); an entry matches when any pair matches
-- Returns {matches, last id read or '', number read}; matches = {{id, {field, value, ...}}, ...}.
local rows
if ARGV[1] == 'rev' then
  rows = redis.call('XREVRANGE', KEYS[1], ARGV[2], '-', 'COUNT', tonumber(ARGV[3]))
else
  rows = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
end
local filters = {}
for i = 4, #ARGV - 1, 2 do
  local kind, value = string.match(ARGV[i + 1], '^(%a+):(.*)$')
  table.insert(filters, {field = ARGV[i], kind = kind, value = value})
end
local matches = {}
for _, row in ipairs(rows) do
  local flat, hit = row[2], false
  for j = 1, #flat - 1, 2 do
    for _, f in ipairs(filters) do
      if flat[j] == f.field then
        local v = flat[j + 1]
        if (f.kind == 'eq' and v == f.value) or (f.kind == 'has' and string.find(v, f.value, 1, true)) then
          hit = true
        end
      end
    end
    if hit then break end
  end
  if hit then table.insert(matches, row) end
end
local last = ''
if #rows > 0 then last = rows[#rows][1] end
return {matches, last, #rows}
