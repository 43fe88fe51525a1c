#!lua name=fikra
-- The money and rate-limit logic of the Redis store, run inside Redis as one library of
-- Redis 7 Functions. Each function touches the keys of one account only (all under the
-- account's hash tag, so it works on Redis Cluster), checks everything before its first write
-- (a function gets no rollback), and reads the clock from TIME unless the caller passes one
-- (tests with a manual clock). Lua numbers are doubles: every amount here stays below 2^53
-- (balances are capped, limits are at most 1e11 per minute), and every number written back is
-- formatted with %d so no digit is lost.
--
-- Key layout (P = prefix, A = account id):
--   P:{A}:acct        hash   everything an admission and a settlement read and write, so each
--                            reads it with one HMGET and writes it with one HSET:
--                            tier, balance, held (nano-USD), created_at (ms);
--                            the rate buckets: rc rl ra / tc tl ta for live keys (requests,
--                            tokens: capacity, level in 1/60000 token, updated ms) and xrc xrl
--                            xra / xtc xtl xta for test keys;
--                            per live key (SPEC §10, kept for every key, capped or not, so a cap
--                            set later counts what the key already spent in its period):
--                            h:KEY = what the key's open holds hold, s:KEY = "day_start
--                            day_spent month_start month_spent lifetime_spent" (ms, nano-USD; a
--                            charge counts in the period it settles in, on the gateway's
--                            calendar). Fields, not keys of their own: a Function never declares
--                            a key that may not exist (a slot being migrated would refuse it)
--   P:{A}:holds       hash   request id -> "amount tokens kind in_price out_price expires key model"
--                            (the prices as admitted, for operators reading holds: settlement
--                            is priced by the gateway, which passes the cost);
--                            kind l (live) or t (test) for a hold; v or x for a marker that holds
--                            nothing: v = voided (its admission's answer was lost: a late
--                            fk_admit of that id refuses itself), x = released because its node
--                            was presumed dead (its settle then charges nothing); markers live
--                            until their expiry like holds and are dropped by the reaper silently
--   P:{A}:holdexp     zset   request id scored by expiry (ms), for the reaper
--   P:nodes           zset   gateway node tag scored by its last heartbeat (Redis TIME, ms): not
--                            an account key; only fk_nodes touches it
--   P:{A}:ledger      stream usage records: one entry per settlement (fields request_id ...
--                            created_at), or one per lease call with all its records in 'records'
--   P:{A}:payrefs     set    payment references credited to this account
--   P:{A}:lease:L     string last call applied for lease L: "seq granted_requests granted_tokens
--                            escrow charged loss" (expires an hour after the lease's last call)
--   a lease's escrow is a hold in P:{A}:holds under the lease id (model "lease"), reaped like any
--   hold when its worker stops renewing it
-- Library 10 kept the buckets in P:{A}:rate:live and P:{A}:rate:test and a capped key's spend in
-- s:KEY:P and r:REQUEST fields; 11 reads none of them (buckets start full once, old fields stay
-- unread).

local LIBRARY_VERSION = 11
local UNITS = 60000
-- Largest balance an account may hold, in nano-USD (about 9 million USD): exact in a double.
local MAX_BALANCE = 9007199254740991

local function int(x)
  return string.format('%d', x)
end

local function clock(arg)
  local given = tonumber(arg)
  if given and given > 0 then
    return given
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A call with another number of keys comes from a gateway built for another library version
-- (library 10 passed the rate-bucket hashes as keys): refused before anything is read or written,
-- so a fleet being upgraded fails those calls closed instead of writing to the wrong keys.
local function refuse_arity(KEYS, expected, name)
  if #KEYS ~= expected then
    return redis.error_reply('ERR fikra library v' .. LIBRARY_VERSION .. ': ' .. name .. ' takes ' .. expected ..
      ' keys, got ' .. #KEYS .. ' (a gateway of another version?)')
  end
  return nil
end

-- floor(a / b) for non-negative integers below 2^53, exact.
local function div_floor(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function div_ceil(a, b)
  local q = div_floor(a, b)
  if q * b < a then q = q + 1 end
  return q
end

-- A token bucket as in ratelimit.rs: capacity per minute, level in 1/60000 token, from its
-- three fields as read (nil: a new bucket, full).
local function bucket_from(cap, level, at, capacity, now)
  local b = { cap = tonumber(cap), level = tonumber(level), at = tonumber(at) }
  if b.cap == nil or b.level == nil or b.at == nil then
    b.cap = capacity
    b.level = capacity * UNITS
    b.at = now
  end
  return b
end

-- The account-hash fields of the buckets of key kind l or t: requests then tokens, each
-- capacity, level, updated.
local BUCKET_FIELDS = {
  l = { 'rc', 'rl', 'ra', 'tc', 'tl', 'ta' },
  t = { 'xrc', 'xrl', 'xra', 'xtc', 'xtl', 'xta' },
}

local function bucket_refill(b, now)
  if now > b.at then
    local elapsed = now - b.at
    if elapsed >= UNITS then
      b.level = b.cap * UNITS
    else
      b.level = math.min(b.level + elapsed * b.cap, b.cap * UNITS)
    end
    b.at = now
  end
end

local function bucket_fit(b, capacity, now)
  if capacity ~= b.cap then
    bucket_refill(b, now)
    if capacity > b.cap then
      b.level = b.level + (capacity - b.cap) * UNITS
    end
    b.cap = capacity
    b.level = math.min(b.level, capacity * UNITS)
  end
end

local function bucket_available(b, now)
  bucket_refill(b, now)
  return div_floor(b.level, UNITS)
end

-- Milliseconds until `tokens` fit, 0 if they fit now, -1 for never.
local function bucket_wait(b, tokens, now)
  bucket_refill(b, now)
  local needed = tokens * UNITS
  if needed <= b.level then return 0 end
  if b.cap == 0 then return -1 end
  return div_ceil(needed - b.level, b.cap)
end

local function bucket_reset(b, now)
  bucket_refill(b, now)
  if b.cap == 0 then return 0 end
  return div_ceil(b.cap * UNITS - b.level, b.cap)
end

-- Appends bucket `b`'s three fields (names f[i], f[i+1], f[i+2]) to an HSET's field list.
local function bucket_fields(out, f, i, b)
  out[#out + 1] = f[i]
  out[#out + 1] = int(b.cap)
  out[#out + 1] = f[i + 1]
  out[#out + 1] = int(b.level)
  out[#out + 1] = f[i + 2]
  out[#out + 1] = int(b.at)
end

-- Appends field `name` = `value` to an HSET's field list.
local function put(out, name, value)
  out[#out + 1] = name
  out[#out + 1] = value
end

local function snapshot(r, t, now)
  return {
    r.cap, bucket_available(r, now), bucket_reset(r, now),
    t.cap, bucket_available(t, now), bucket_reset(t, now),
  }
end

local function append(list, tail)
  for _, v in ipairs(tail) do list[#list + 1] = v end
  return list
end

-- The limits for this account: ARGV gives (rpm, tpm) for unverified and for trusted.
local function limits_for(tier, u_rpm, u_tpm, t_rpm, t_tpm)
  if tier == 'trusted' then return t_rpm, t_tpm end
  return u_rpm, u_tpm
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

-- KEYS: acct, holds, holdexp
-- ARGV: request_id, key_id, kind (l|t), model, input_upper, requested_output, client_cap (0|1),
--       in_price, out_price, now (0 = Redis TIME), u_rpm, u_tpm, t_rpm, t_tpm, hold_ttl_ms,
--       refuse_clamp (1 = answer {5, output_cap} rather than admit with a lowered cap),
--       key spend cap ('' = none), its period kind (d|m|l), the period's start (the gateway's
--       clock: the same instant as `now` in its calendar)
-- Reply: {1, hold, output_cap, tokens, rates...} admitted; {2, bucket(0 rpm|1 tpm), limit, used,
--   requested, retry_ms(-1 never), rates...}; {3, limit, requested, rates...} too large;
--   {4, balance, available, needed, rates...} insufficient; {6, cap, spent, key_held, needed,
--   rates...} the key's cap leaves no room; {-1} no account; {-2} duplicate id
--   (a hold or a marker has this id: a voided admission refuses itself here, writing nothing;
--   a refusal on the way there writes nothing either).
-- Commands: HMGET, then on admission HSETNX (the id check, the first write), HSET, ZADD.
local function fk_admit(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 3, 'fk_admit')
  if refused then return refused end
  local acct, holds, holdexp = KEYS[1], KEYS[2], KEYS[3]
  local id, key_id, kind, model = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local input, requested = tonumber(ARGV[5]), tonumber(ARGV[6])
  local client_cap = ARGV[7] == '1'
  local in_price, out_price = tonumber(ARGV[8]), tonumber(ARGV[9])
  local now = clock(ARGV[10])
  local f = BUCKET_FIELDS[kind]
  local key_held_field = 'h:' .. key_id
  local a = redis.call('HMGET', acct, 'tier', 'balance', 'held', f[1], f[2], f[3], f[4], f[5], f[6],
    key_held_field, 's:' .. key_id)
  if not a[1] then return { -1 } end
  local tier, balance, held = a[1], tonumber(a[2]), tonumber(a[3])
  local key_held = tonumber(a[10] or '0')
  local rpm, tpm = limits_for(tier, tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]))
  local r = bucket_from(a[4], a[5], a[6], rpm, now)
  local t = bucket_from(a[7], a[8], a[9], tpm, now)
  bucket_fit(r, rpm, now)
  bucket_fit(t, tpm, now)

  -- 1. The wallet (test keys never touch it).
  local output_cap = requested
  local input_cost = input * in_price
  if kind == 'l' then
    local available = math.max(balance - held, 0)
    local needed = input_cost + out_price
    if available < needed then
      return append({ 4, balance, available, needed }, snapshot(r, t, now))
    end
    if out_price > 0 then
      output_cap = math.min(output_cap, div_floor(available - input_cost, out_price))
    end
  end
  -- 1b. The key's own cap: its spend in this period plus its open holds stay within it.
  local cap = tonumber(ARGV[17] or '')
  local cap_p, cap_start = ARGV[18], tonumber(ARGV[19] or '0')
  if kind ~= 'l' then cap = nil end
  if cap then
    local spent = spend_in(spend_parse(a[11]), cap_p, cap_start)
    local room = math.max(cap - spent - key_held, 0)
    local needed = input_cost + out_price
    if room < needed then
      return append({ 6, cap, spent, key_held, needed }, snapshot(r, t, now))
    end
    if out_price > 0 then
      output_cap = math.min(output_cap, div_floor(room - input_cost, out_price))
    end
  end
  -- 2. A request larger than the whole TPM bucket can never pass.
  if not client_cap then
    output_cap = math.min(output_cap, math.max(t.cap - input, 0))
  end
  local tokens = input + output_cap
  if output_cap == 0 or tokens > t.cap then
    return append({ 3, t.cap, input + math.max(output_cap, 1) }, snapshot(r, t, now))
  end
  if ARGV[16] == '1' and output_cap < requested then
    return { 5, output_cap }
  end
  -- 3. RPM, then TPM; a denial takes nothing.
  local wait = bucket_wait(r, 1, now)
  if wait ~= 0 then
    return append({ 2, 0, r.cap, r.cap - bucket_available(r, now), 1, wait }, snapshot(r, t, now))
  end
  wait = bucket_wait(t, tokens, now)
  if wait ~= 0 then
    return append({ 2, 1, t.cap, t.cap - bucket_available(t, now), tokens, wait }, snapshot(r, t, now))
  end
  -- 4. Everything checked: write, the hold first (it is the duplicate-id check).
  local hold = 0
  if kind == 'l' then hold = input_cost + output_cap * out_price end
  local expires = now + tonumber(ARGV[15])
  local text = table.concat({ int(hold), int(tokens), kind, int(in_price), int(out_price), int(expires), key_id,
    model }, ' ')
  if redis.call('HSETNX', holds, id, text) == 0 then return { -2 } end
  r.level = r.level - UNITS
  t.level = t.level - tokens * UNITS
  local fields = {}
  bucket_fields(fields, f, 1, r)
  bucket_fields(fields, f, 4, t)
  if kind == 'l' then
    put(fields, 'held', int(held + hold))
    put(fields, key_held_field, int(key_held + hold))
  end
  redis.call('HSET', acct, unpack(fields))
  redis.call('ZADD', holdexp, int(expires), id)
  return append({ 1, hold, output_cap, tokens }, snapshot(r, t, now))
end

-- KEYS: acct, holds, holdexp, ledger
-- ARGV: request_id, prompt, completion, outcome, now, u_rpm, u_tpm, t_rpm, t_tpm (of live keys),
--       test_rpm, test_tpm, ledger_maxlen, cached, reasoning, cost (nano-USD, priced by the
--       gateway from the model's prices: input, cached input, output), then the tokens the
--       TPM bucket is trued up to if the account is unverified (and for test keys), and if
--       it is trusted (tiers differ in whether cached prompt tokens count), then the start (ms,
--       the gateway's calendar) of the day and of the month the charge counts in
-- Reply: {1, charged, released, operator_loss}; {0} when no hold has this id (or it was voided);
--   {2} when the hold was released because its node was presumed dead (nothing charged: an
--   operator loss the gateway counts; the marker goes).
-- Commands: HGET, HMGET, HSET, HDEL, ZREM, XADD.
local function fk_settle(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 4, 'fk_settle')
  if refused then return refused end
  local acct, holds, holdexp, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local id = ARGV[1]
  local text = redis.call('HGET', holds, id)
  if not text then return { 0 } end
  local hold = parse_hold(text)
  if hold.kind == VOIDED then return { 0 } end
  local f = BUCKET_FIELDS[hold.kind] or BUCKET_FIELDS.l
  local a = redis.call('HMGET', acct, 'tier', 'balance', 'held', f[4], f[5], f[6], 'h:' .. hold.key_id,
    's:' .. hold.key_id)
  if not a[1] then return { 0 } end
  if hold.kind == RELEASED_DEAD then
    redis.call('HDEL', holds, id)
    redis.call('ZREM', holdexp, id)
    return { 2 }
  end
  local tokens = { tonumber(ARGV[2]), tonumber(ARGV[13]), tonumber(ARGV[3]), tonumber(ARGV[14]) }
  local now = clock(ARGV[5])
  local cost = tonumber(ARGV[15])
  local charged, loss = 0, 0
  if hold.kind == 'l' then
    charged = math.min(cost, hold.amount)
    loss = cost - charged
  end
  local tpm
  if hold.kind == 'l' then
    local _
    _, tpm = limits_for(a[1], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
  else
    tpm = tonumber(ARGV[11])
  end
  local t = bucket_from(a[4], a[5], a[6], tpm, now)
  bucket_fit(t, tpm, now)
  bucket_refill(t, now)
  local actual = tonumber(ARGV[16])
  if hold.kind == 'l' and a[1] == 'trusted' then actual = tonumber(ARGV[17]) end
  if actual < hold.tokens then
    t.level = math.min(t.level + (hold.tokens - actual) * UNITS, t.cap * UNITS)
  else
    t.level = math.max(t.level - (actual - hold.tokens) * UNITS, 0)
  end
  -- Writes.
  local fields = {}
  bucket_fields(fields, f, 4, t)
  put(fields, 'held', int(math.max(tonumber(a[3]) - hold.amount, 0)))
  if charged > 0 then
    put(fields, 'balance', int(math.max(tonumber(a[2]) - charged, 0)))
  end
  if key_holds(hold) then
    put(fields, 'h:' .. hold.key_id, int(math.max(tonumber(a[7] or '0') - hold.amount, 0)))
    if charged > 0 then
      put(fields, 's:' .. hold.key_id, spend_add(spend_parse(a[8]), charged, tonumber(ARGV[18]), tonumber(ARGV[19])))
    end
  end
  redis.call('HSET', acct, unpack(fields))
  redis.call('HDEL', holds, id)
  redis.call('ZREM', holdexp, id)
  record(ledger, ARGV[12], id, hold.key_id, hold.model, tokens, charged, ARGV[4], now)
  return { 1, charged, hold.amount - charged, loss }
end

-- KEYS: acct ; ARGV: now, u_rpm, u_tpm, t_rpm, t_tpm, kind (l|t). Reply: rates, or {-1}.
local function fk_peek(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 1, 'fk_peek')
  if refused then return refused end
  local f = BUCKET_FIELDS[ARGV[6]] or BUCKET_FIELDS.l
  local a = redis.call('HMGET', KEYS[1], 'tier', f[1], f[2], f[3], f[4], f[5], f[6])
  if not a[1] then return { -1 } end
  local now = clock(ARGV[1])
  local rpm, tpm = limits_for(a[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
  local r = bucket_from(a[2], a[3], a[4], rpm, now)
  local t = bucket_from(a[5], a[6], a[7], tpm, now)
  bucket_fit(r, rpm, now)
  bucket_fit(t, tpm, now)
  return snapshot(r, t, now)
end

-- KEYS: acct ; ARGV: signup credit, now. Reply: {1, created_at} or {-2} if it exists.
local function fk_create_account(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[1]) == 1 then return { -2 } end
  local now = clock(ARGV[2])
  redis.call('HSET', KEYS[1], 'tier', 'unverified', 'balance', ARGV[1], 'held', '0', 'created_at', int(now))
  return { 1, now }
end

-- KEYS: acct, payrefs ; ARGV: amount, reference.
-- Reply: {1, balance, tier} credited; {0, balance, tier} duplicate; {-1} no account; {-4} too large.
local function fk_topup(KEYS, ARGV)
  local a = redis.call('HMGET', KEYS[1], 'tier', 'balance')
  if not a[1] then return { -1 } end
  local balance = tonumber(a[2])
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return { 0, balance, a[1] } end
  local after = balance + tonumber(ARGV[1])
  if after > MAX_BALANCE then return { -4 } end
  local tier = a[1]
  if tier == 'unverified' then tier = 'trusted' end
  redis.call('HSET', KEYS[1], 'balance', int(after), 'tier', tier)
  redis.call('SADD', KEYS[2], ARGV[2])
  return { 1, after, tier }
end

-- The node tag inside an id this gateway made: request ids are "req_" + tag + hex, lease ids
-- tag + "-" + worker + ":" + account (a tag is 8 base62 characters). nil for any other id.
local function owner_tag(id)
  return string.match(id, '^req_(%w%w%w%w%w%w%w%w)%x+$') or string.match(id, '^(%w%w%w%w%w%w%w%w)%-%d+:')
end

-- KEYS: acct, holds, holdexp, ledger
-- ARGV: now, ledger_maxlen, most to release (per kind), hold_ttl_ms, escrow_ttl_ms, then pairs
--       (node tag, cutoff ms): nodes presumed dead, each with the last time (its last heartbeat
--       plus the dead-after bound) at which a hold it took may be released as its.
-- Releases, without charging, holds whose expiry has passed (an `expired` record each) and the
-- holds of presumed-dead nodes taken before their cutoff (a `node_lost` record each; a request's
-- hold leaves an x marker so a settle from a node that was only cut off charges nothing and
-- says so). Markers whose expiry has passed are dropped. A hold taken after its node's cutoff
-- belongs to a node that came back, and stays. Reply: {expired released, dead nodes' released}.
local REAP_FIXED_ARGS = 5
local function fk_reap(KEYS, ARGV)
  local keys = { acct = KEYS[1], holds = KEYS[2], holdexp = KEYS[3] }
  local now = clock(ARGV[1])
  local most = tonumber(ARGV[3])
  local hold_ttl, escrow_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
  local cutoffs, any_dead = {}, false
  for i = REAP_FIXED_ARGS + 1, #ARGV - 1, 2 do
    cutoffs[ARGV[i]] = tonumber(ARGV[i + 1])
    any_dead = true
  end
  -- Everything read first.
  local due = redis.call('ZRANGEBYSCORE', keys.holdexp, '-inf', int(now), 'LIMIT', 0, most)
  local expired = {}
  for _, id in ipairs(due) do
    local text = redis.call('HGET', keys.holds, id)
    expired[#expired + 1] = { id = id, hold = text and parse_hold(text) }
  end
  local orphans = {}
  if any_dead then
    local all = redis.call('HGETALL', keys.holds)
    for i = 1, #all - 1, 2 do
      local id = all[i]
      local tag = owner_tag(id)
      local cutoff = tag and cutoffs[tag]
      if cutoff and #orphans < most then
        local hold = parse_hold(all[i + 1])
        local ttl = hold_ttl
        if hold.model == 'lease' then ttl = escrow_ttl end
        if hold.amount and not is_marker(hold) and hold.expires > now and hold.expires - ttl <= cutoff then
          orphans[#orphans + 1] = { id = id, hold = hold }
        end
      end
    end
  end
  -- Writes.
  local released = 0
  for _, entry in ipairs(expired) do
    if entry.hold and not is_marker(entry.hold) then
      release(keys, entry.id, entry.hold)
      record(KEYS[4], ARGV[2], entry.id, entry.hold.key_id, entry.hold.model, { 0, 0, 0, 0 }, 0, 'expired', now)
      released = released + 1
    else
      redis.call('HDEL', keys.holds, entry.id)
      redis.call('ZREM', keys.holdexp, entry.id)
    end
  end
  for _, entry in ipairs(orphans) do
    release(keys, entry.id, entry.hold)
    if entry.hold.model ~= 'lease' then mark(keys, entry.id, RELEASED_DEAD, now + hold_ttl) end
    record(KEYS[4], ARGV[2], entry.id, entry.hold.key_id, entry.hold.model, { 0, 0, 0, 0 }, 0, 'node_lost', now)
  end
  return { released, #orphans }
end

-- An admission whose answer was lost (timed out, connection gone after it was sent): whether
-- it ran or not, once this has run nothing of it remains. If its hold is there: released, its
-- request token and its tokens given back to the buckets. Either way a v marker stays under
-- the id until the hold TTL has passed, so an fk_admit of that id still on its way refuses
-- itself. Idempotent: a second call finds the marker and does nothing.
-- KEYS: acct, holds, holdexp
-- ARGV: request_id, now, u_rpm, u_tpm, t_rpm, t_tpm (of the admission's key kind), hold_ttl_ms
-- Reply: {1, hold, tokens} released; {2} marker written (no hold yet); {0} already void, or
--   released as its node's; {-1} no account (nothing written: no admission can pass either).
local function fk_void(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 3, 'fk_void')
  if refused then return refused end
  local keys = { acct = KEYS[1], holds = KEYS[2], holdexp = KEYS[3] }
  local id = ARGV[1]
  local now = clock(ARGV[2])
  local tier = redis.call('HGET', keys.acct, 'tier')
  if not tier then return { -1 } end
  local text = redis.call('HGET', keys.holds, id)
  local expires = now + tonumber(ARGV[7])
  if not text then
    mark(keys, id, VOIDED, expires)
    return { 2 }
  end
  local hold = parse_hold(text)
  if is_marker(hold) then return { 0 } end
  local f = BUCKET_FIELDS[hold.kind]
  local v = redis.call('HMGET', keys.acct, f[1], f[2], f[3], f[4], f[5], f[6])
  local rpm, tpm = limits_for(tier, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
  local r = bucket_from(v[1], v[2], v[3], rpm, now)
  local t = bucket_from(v[4], v[5], v[6], tpm, now)
  bucket_fit(r, rpm, now)
  bucket_fit(t, tpm, now)
  bucket_refill(r, now)
  bucket_refill(t, now)
  r.level = math.min(r.level + UNITS, r.cap * UNITS)
  t.level = math.min(t.level + hold.tokens * UNITS, t.cap * UNITS)
  -- Writes.
  release(keys, id, hold)
  local fields = {}
  bucket_fields(fields, f, 1, r)
  bucket_fields(fields, f, 4, t)
  redis.call('HSET', keys.acct, unpack(fields))
  mark(keys, id, VOIDED, expires)
  return { 1, hold.amount, hold.tokens }
end

-- Node liveness. KEYS: nodes ; ARGV: node tag ('' = none), now, dead_after_ms, forget_after_ms,
-- leaving (1 = remove the tag: a clean shutdown).
-- Reads first: the nodes whose last heartbeat is older than dead_after_ms (before this call's
-- own beat, so a node that could not beat for that long sees itself too: callers skip their
-- own tag). Then writes: the tag's heartbeat (or its removal), and every entry older than
-- forget_after_ms dropped (their holds have expired by then).
-- Reply: {tag, last heartbeat ms, ...} of the nodes presumed dead.
local function fk_nodes(KEYS, ARGV)
  local tag = ARGV[1]
  local now = clock(ARGV[2])
  local dead_after, forget_after = tonumber(ARGV[3]), tonumber(ARGV[4])
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], int(now - forget_after), '(' .. int(now - dead_after), 'WITHSCORES')
  if ARGV[5] == '1' then
    redis.call('ZREM', KEYS[1], tag)
  elseif tag ~= '' then
    redis.call('ZADD', KEYS[1], int(now), tag)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now - forget_after))
  return dead
end

-- A worker's lease on one account: in one call it pays for the requests the worker served
-- from its lease since the last call (usage records appended to the ledger, charged from the
-- escrow), gives back unused rate tokens, and takes new ones plus an escrow out of the wallet
-- for the next period. Grants never exceed 1/share of what is left, so leases alone can never
-- empty a bucket or a wallet. Idempotent per (lease, seq): a retried call changes nothing.
-- KEYS: acct, holds, holdexp, ledger, lease
-- ARGV: lease_id, seq, now, u_rpm, u_tpm, t_rpm, t_tpm, escrow_ttl_ms, ledger_maxlen,
--       return_requests, tokens_delta (signed: returned > 0, owed < 0), want_requests,
--       want_tokens, want_escrow (escrow to hold after this call; 0 ends the lease), share,
--       the starts (ms, the gateway's calendar) of the day and the month the records' charges
--       count in (each key's s: field), then 2 fields per usage record: the record as
--       "request_id key_id model prompt completion cost outcome cached reasoning", and its cost
--       again (the gateway writes both; no field holds ' ' or ';')
-- Reply: {1, granted_requests, granted_tokens, escrow, charged, loss, rates..., trusted (1|0)};
--        {0} an older call (a newer one was applied); {-1} no account.
local LEASE_FIXED_ARGS = 17
-- 1 for a trusted account, else 0 (the gateway's tier policy decides what that means for TPM).
local function tier_flag(tier)
  if tier == 'trusted' then return 1 end
  return 0
end
local LEASE_MEMORY_MS = 3600000
local function fk_lease(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 5, 'fk_lease')
  if refused then return refused end
  local keys = { acct = KEYS[1], holds = KEYS[2], holdexp = KEYS[3] }
  local ledger, lease_key = KEYS[4], KEYS[5]
  local f = BUCKET_FIELDS.l
  local id, seq = ARGV[1], tonumber(ARGV[2])
  local now = clock(ARGV[3])
  local a = redis.call('HMGET', keys.acct, 'tier', 'balance', 'held', f[1], f[2], f[3], f[4], f[5], f[6])
  if not a[1] then return { -1 } end
  local tier, balance, held = a[1], tonumber(a[2]), tonumber(a[3])
  local rpm, tpm = limits_for(tier, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
  local r = bucket_from(a[4], a[5], a[6], rpm, now)
  local t = bucket_from(a[7], a[8], a[9], tpm, now)
  bucket_fit(r, rpm, now)
  bucket_fit(t, tpm, now)
  local last = redis.call('GET', lease_key)
  if last then
    local last_seq = tonumber(string.match(last, '^(%d+)'))
    if last_seq > seq then return { 0 } end
    if last_seq == seq then
      local g = {}
      for v in string.gmatch(last, '%d+') do g[#g + 1] = tonumber(v) end
      return append(append({ 1, g[2], g[3], g[4], g[5], g[6] }, snapshot(r, t, now)), { tier_flag(tier) })
    end
  end
  local text = redis.call('HGET', keys.holds, id)
  local escrow = 0
  if text then escrow = parse_hold(text).amount end

  -- 1. Pay for what was served: from the escrow first; past it (the escrow was reaped while
  --    the worker could not reach Redis) from the available balance; never below zero.
  local count = (#ARGV - LEASE_FIXED_ARGS) / 2
  local costs, total = {}, 0
  for i = 1, count do
    costs[i] = tonumber(ARGV[LEASE_FIXED_ARGS + i * 2])
    total = total + costs[i]
  end
  local from_escrow = math.min(total, escrow)
  local from_balance = math.min(total - from_escrow, math.max(balance - held, 0))
  local loss = total - from_escrow - from_balance
  balance = balance - from_escrow - from_balance
  held = held - from_escrow
  escrow = escrow - from_escrow
  -- An operator loss is taken off the last records' costs, so the ledger equals what was charged.
  local lines = {}
  for i = 1, count do lines[i] = ARGV[LEASE_FIXED_ARGS + i * 2 - 1] end
  local cut = loss
  for i = count, 1, -1 do
    if cut == 0 then break end
    local d = math.min(costs[i], cut)
    costs[i] = costs[i] - d
    cut = cut - d
    lines[i] = string.gsub(lines[i], '^(%S+ %S+ %S+ %d+ %d+ )%d+', '%1' .. int(costs[i]))
  end

  -- 2. Give back, then take.
  bucket_refill(r, now)
  bucket_refill(t, now)
  r.level = math.min(r.level + tonumber(ARGV[10]) * UNITS, r.cap * UNITS)
  local delta = tonumber(ARGV[11])
  if delta >= 0 then
    t.level = math.min(t.level + delta * UNITS, t.cap * UNITS)
  else
    t.level = math.max(t.level + delta * UNITS, 0)
  end
  local share = math.max(tonumber(ARGV[15]), 1)
  local granted_r = math.min(tonumber(ARGV[12]), div_floor(div_floor(r.level, UNITS), share))
  local granted_t = math.min(tonumber(ARGV[13]), div_floor(div_floor(t.level, UNITS), share))
  r.level = r.level - granted_r * UNITS
  t.level = t.level - granted_t * UNITS
  local want_escrow = tonumber(ARGV[14])
  if want_escrow < escrow then
    held = held - (escrow - want_escrow)
    escrow = want_escrow
  elseif want_escrow > escrow then
    local add = math.min(want_escrow - escrow, div_floor(math.max(balance - held, 0), share))
    held = held + add
    escrow = escrow + add
  end

  -- Each key's spend: what its records cost, after the loss was taken off.
  local spent_by_key, spending_keys = {}, {}
  for i = 1, count do
    local key_id = string.match(lines[i], '^%S+ (%S+) ')
    if key_id and key_id ~= '-' and costs[i] > 0 then
      if not spent_by_key[key_id] then
        spent_by_key[key_id] = 0
        spending_keys[#spending_keys + 1] = key_id
      end
      spent_by_key[key_id] = spent_by_key[key_id] + costs[i]
    end
  end

  -- 3. Writes.
  local fields = { 'balance', int(balance), 'held', int(math.max(held, 0)) }
  bucket_fields(fields, f, 1, r)
  bucket_fields(fields, f, 4, t)
  if #spending_keys > 0 then
    local names = {}
    for i, key_id in ipairs(spending_keys) do names[i] = 's:' .. key_id end
    local records = redis.call('HMGET', keys.acct, unpack(names))
    local day_start, month_start = tonumber(ARGV[16]), tonumber(ARGV[17])
    for i, key_id in ipairs(spending_keys) do
      put(fields, names[i], spend_add(spend_parse(records[i]), spent_by_key[key_id], day_start, month_start))
    end
  end
  redis.call('HSET', keys.acct, unpack(fields))
  -- The call's usage records go into one ledger entry (one XADD per call, not per request):
  -- 'records' = "request_id key_id model prompt completion cost outcome" joined by ';'.
  if count > 0 then
    redis.call('XADD', ledger, 'MAXLEN', '~', ARGV[9], '*', 'records', table.concat(lines, ';'), 'created_at', int(now))
  end
  if escrow > 0 then
    local expires = now + tonumber(ARGV[8])
    redis.call('HSET', keys.holds, id, table.concat({ int(escrow), '0', 'l', '0', '0', int(expires), '-', 'lease' }, ' '))
    redis.call('ZADD', keys.holdexp, int(expires), id)
  elseif text then
    redis.call('HDEL', keys.holds, id)
    redis.call('ZREM', keys.holdexp, id)
  end
  local charged = total - loss
  redis.call('SET', lease_key, table.concat({ int(seq), int(granted_r), int(granted_t), int(escrow), int(charged),
    int(loss) }, ' '), 'PX', LEASE_MEMORY_MS)
  return append(append({ 1, granted_r, granted_t, escrow, charged, loss }, snapshot(r, t, now)), { tier_flag(tier) })
end

-- KEYS: key record ; ARGV: key_id, account, kind, name ('' = none), spend cap ('' = none),
-- cap period (d|m|l, '' = none). Reply: 1, or -2 if it exists.
local function fk_put_key(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[1]) == 1 then return -2 end
  redis.call('HSET', KEYS[1], 'key_id', ARGV[1], 'account', ARGV[2], 'kind', ARGV[3], 'name', ARGV[4], 'revoked', '0',
    'cap', ARGV[5] or '', 'cap_period', ARGV[6] or '')
  return 1
end

local function fk_version()
  return LIBRARY_VERSION
end

redis.register_function('fk_admit', fk_admit)
redis.register_function('fk_settle', fk_settle)
redis.register_function{ function_name = 'fk_peek', callback = fk_peek, flags = { 'no-writes' } }
redis.register_function('fk_create_account', fk_create_account)
redis.register_function('fk_topup', fk_topup)
redis.register_function('fk_reap', fk_reap)
redis.register_function('fk_void', fk_void)
redis.register_function('fk_nodes', fk_nodes)
redis.register_function('fk_lease', fk_lease)
redis.register_function('fk_put_key', fk_put_key)
redis.register_function{ function_name = 'fk_version', callback = fk_version, flags = { 'no-writes' } }
