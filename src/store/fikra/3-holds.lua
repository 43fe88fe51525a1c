-- Holds, markers, the keys' spend records and ledger records: what the functions below share.

-- Appends field `name` = `value` to an HSET's field list.
local function put(out, name, value)
  out[#out + 1] = name
  out[#out + 1] = value
end

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

-- What the record (the s:KEY field as read, nil if none) says was spent in the period of kind
-- `p` (1 day, 2 month, 3 lifetime) that starts at `start`: a record of an older period spent
-- nothing in this one; one of a newer period (this caller's clock is behind the one that
-- settled) counts whole. Only the numbers of that period are read.
local function spent_in(text, p, start)
  if not text then return 0 end
  if p == 3 then
    return (string.match(text, '^%d+ %d+ %d+ %d+ (%d+)$') or 0) + 0
  end
  local at, spent
  if p == 1 then
    at, spent = string.match(text, '^(%d+) (%d+) %d+ %d+ %d+$')
  else
    at, spent = string.match(text, '^%d+ %d+ (%d+) (%d+) %d+$')
  end
  if at and at + 0 >= start then return spent + 0 end
  return 0
end

-- The record's text with a settled charge added, in the day and month starting at day_start
-- and month_start (a record of an older period starts the new one at zero).
local function spend_added(text, charged, day_start, month_start)
  local ds, d, ms, m, l
  if text then ds, d, ms, m, l = string.match(text, '^(%d+) (%d+) (%d+) (%d+) (%d+)$') end
  if not ds then ds, d, ms, m, l = 0, 0, 0, 0, 0 end
  if ds + 0 < day_start then ds, d = int(day_start), 0 end
  if ms + 0 < month_start then ms, m = int(month_start), 0 end
  return string.format('%s %d %s %d %d', ds, d + charged, ms, m + charged, l + charged)
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

