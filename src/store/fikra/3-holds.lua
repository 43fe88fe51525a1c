-- Holds, markers, the keys' spend records and ledger records: what the functions below share.

-- `tokens` = { prompt, cached, completion, reasoning } (cached is part of prompt, reasoning
-- part of completion, as upstreams report them).
local function record(ledger, maxlen, id, key_id, model, tokens, cost, outcome, now)
  redis.call('XADD', ledger, 'MAXLEN', '~', maxlen, '*',
    'request_id', id, 'key_id', key_id, 'model', model,
    'prompt_tokens', int(tokens[1]), 'cached_tokens', int(tokens[2]),
    'completion_tokens', int(tokens[3]), 'reasoning_tokens', int(tokens[4]),
    'cost', int(cost), 'outcome', outcome, 'created_at', int(now))
end

local function parse_hold(text)
  local amount, tokens, kind, in_price, out_price, expires, key_id, model =
    string.match(text, '^(%d+) (%d+) (%a) (%d+) (%d+) (%d+) (%S+) (.*)$')
  return {
    amount = tonumber(amount), tokens = tonumber(tokens), kind = kind,
    in_price = tonumber(in_price), out_price = tonumber(out_price), expires = tonumber(expires),
    key_id = key_id, model = model,
  }
end

-- A live key's spend record (the s:KEY field) as {day_start, day_spent, month_start,
-- month_spent, lifetime_spent}; all 0 when it has none.
local function spend_parse(text)
  if text then
    local ds, d, ms, m, l = string.match(text, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
    if ds then return { tonumber(ds), tonumber(d), tonumber(ms), tonumber(m), tonumber(l) } end
  end
  return { 0, 0, 0, 0, 0 }
end

-- What the record says was spent in the period of kind `p` (d, m, l) that starts at `start`:
-- a record of an older period spent nothing in this one; one of a newer period (this caller's
-- clock is behind the one that settled) counts whole.
local function spend_in(s, p, start)
  if p == 'l' then return s[5] end
  local at, spent = s[1], s[2]
  if p == 'm' then at, spent = s[3], s[4] end
  if at >= start then return spent end
  return 0
end

-- Adds a settled charge to the record, in the day and month starting at day_start and
-- month_start (a record of an older period starts the new one at zero). Returns the field text.
local function spend_add(s, charged, day_start, month_start)
  if s[1] < day_start then s[1], s[2] = day_start, 0 end
  if s[3] < month_start then s[3], s[4] = month_start, 0 end
  s[2], s[4], s[5] = s[2] + charged, s[4] + charged, s[5] + charged
  return table.concat({ int(s[1]), int(s[2]), int(s[3]), int(s[4]), int(s[5]) }, ' ')
end

-- Whether a hold was taken for a live key (its amount is in that key's h: field).
local function key_holds(hold)
  return hold.kind == 'l' and hold.key_id ~= '-'
end

-- Releases one hold off the per-request path (reaper, void): held and the key's h: field go
-- down by its amount, the hold and its expiry entry go away.
local function release(keys, id, hold)
  local fields = {}
  if key_holds(hold) then
    local v = redis.call('HMGET', keys.acct, 'held', 'h:' .. hold.key_id)
    put(fields, 'h:' .. hold.key_id, int(math.max(tonumber(v[2] or '0') - hold.amount, 0)))
    put(fields, 'held', int(math.max(tonumber(v[1] or '0') - hold.amount, 0)))
  else
    local held = tonumber(redis.call('HGET', keys.acct, 'held') or '0')
    put(fields, 'held', int(math.max(held - hold.amount, 0)))
  end
  redis.call('HSET', keys.acct, unpack(fields))
  redis.call('HDEL', keys.holds, id)
  redis.call('ZREM', keys.holdexp, id)
end

local VOIDED, RELEASED_DEAD = 'v', 'x'

local function is_marker(hold)
  return hold.kind == VOIDED or hold.kind == RELEASED_DEAD
end

-- Puts a marker (kind v or x, holding nothing) under `id` until `expires`.
local function mark(keys, id, kind, expires)
  redis.call('HSET', keys.holds, id, table.concat({ '0', '0', kind, '0', '0', int(expires), '-', 'marker' }, ' '))
  redis.call('ZADD', keys.holdexp, int(expires), id)
end

