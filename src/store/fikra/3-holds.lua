-- Holds, markers, the keys' spend records and ledger records: what the functions below share.

-- Appends field `name` = `value` to an HSET's field list.
local function put(out, name, value)
  out[#out + 1] = name
  out[#out + 1] = value
end

-- `tokens` = { prompt, cached, completion, reasoning } (cached is part of prompt, reasoning
-- part of completion, as upstreams report them).
local function record(ledger, maxlen, id, key_id, model, tokens, cost, outcome, now)
  call('XADD', ledger, 'MAXLEN', '~', maxlen, '*',
    'request_id', id, 'key_id', key_id, 'model', model,
    'prompt_tokens', int(tokens[1]), 'cached_tokens', int(tokens[2]),
    'completion_tokens', int(tokens[3]), 'reasoning_tokens', int(tokens[4]),
    'cost', int(cost), 'outcome', outcome, 'created_at', int(now))
end

local function parse_hold(text)
  local amount, tokens, kind, in_price, out_price, expires, key_id, model =
    match(text, '^(%d+) (%d+) (%a) (%d+) (%d+) (%d+) (%S+) (.*)$')
  return {
    amount = tonumber(amount), tokens = tonumber(tokens), kind = kind,
    in_price = tonumber(in_price), out_price = tonumber(out_price), expires = tonumber(expires),
    key_id = key_id, model = model,
  }
end

-- A live key's record, the account-hash field k:KEY: what its open holds hold, then its spend
-- (day start, day spent, month start, month spent, lifetime spent; ms and nano-USD), packed
-- KEY_RECORD. Library 12 kept these as h:KEY (text) and s:KEY ("day_start day_spent month_start
-- month_spent lifetime_spent"): read when k:KEY is missing, deleted when it is first written.
local KEY_RECORD = '<dddddd'

-- The key record's six numbers from `packed` (the k: field as read) or, when there is none, from
-- library 12's fields (read here: 0 where absent), and whether either of those was there (the
-- writer then deletes them).
local function key_record_read(acct, key_id, packed)
  if packed then
    local held, ds, d, ms, m, l = unpack_struct(KEY_RECORD, packed)
    return held, ds, d, ms, m, l, false
  end
  local v = call('HMGET', acct, 'h:' .. key_id, 's:' .. key_id)
  local ds, d, ms, m, l
  if v[2] then ds, d, ms, m, l = match(v[2], '^(%d+) (%d+) (%d+) (%d+) (%d+)$') end
  -- (A missing field reads as false.)
  return tonumber(v[1] or 0) or 0, tonumber(ds or 0), tonumber(d or 0), tonumber(ms or 0), tonumber(m or 0),
    tonumber(l or 0), (v[1] or v[2]) ~= false
end

-- The key record packed, to be written to k:KEY; deletes library 12's fields of the key if any
-- was read.
local function key_record_written(acct, key_id, legacy, held, ds, d, ms, m, l)
  if legacy then
    call('HDEL', acct, 'h:' .. key_id, 's:' .. key_id)
  end
  return pack(KEY_RECORD, held, ds, d, ms, m, l)
end

-- What the record says was spent in the period of kind `p` (1 day, 2 month, 3 lifetime) that
-- starts at `start`: a record of an older period spent nothing in this one; one of a newer
-- period (this caller's clock is behind the one that settled) counts whole.
local function spent_in(ds, d, ms, m, l, p, start)
  if p == 3 then return l end
  if p == 1 then
    if ds >= start then return d end
    return 0
  end
  if ms >= start then return m end
  return 0
end

-- The record's spend with a settled charge added, in the day and month starting at day_start
-- and month_start (a record of an older period starts the new one at zero).
local function spend_added(ds, d, ms, m, l, charged, day_start, month_start)
  if ds < day_start then ds, d = day_start, 0 end
  if ms < month_start then ms, m = month_start, 0 end
  return ds, d + charged, ms, m + charged, l + charged
end

-- Whether a hold was taken for a live key (its amount is in that key's record, k:).
local function key_holds(hold)
  return hold.kind == 'l' and hold.key_id ~= '-'
end

-- Releases one hold off the per-request path (reaper, void): held and what the key's record
-- holds go down by its amount, the hold and its expiry entry go away.
local function release(keys, id, hold)
  local v
  if key_holds(hold) then
    v = call('HMGET', keys.acct, 'b', 'k:' .. hold.key_id)
  else
    v = { call('HGET', keys.acct, 'b') }
  end
  local rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet = account_read(keys.acct, v[1])
  local fields = { 'b', account_written(keys.acct, legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, balance,
    max(held - hold.amount, 0)) }
  if key_holds(hold) then
    local key_held, ds, d, ms, m, l, key_legacy = key_record_read(keys.acct, hold.key_id, v[2])
    put(fields, 'k:' .. hold.key_id,
      key_record_written(keys.acct, hold.key_id, key_legacy, max(key_held - hold.amount, 0), ds, d, ms, m, l))
  end
  call('HSET', keys.acct, unpack(fields))
  call('HDEL', keys.holds, id)
  call('ZREM', keys.holdexp, id)
end

local VOIDED, RELEASED_DEAD = 'v', 'x'

local function is_marker(hold)
  return hold.kind == VOIDED or hold.kind == RELEASED_DEAD
end

-- Puts a marker (kind v or x, holding nothing) under `id` until `expires`.
local function mark(keys, id, kind, expires)
  call('HSET', keys.holds, id, table.concat({ '0', '0', kind, '0', '0', int(expires), '-', 'marker' }, ' '))
  call('ZADD', keys.holdexp, int(expires), id)
end

