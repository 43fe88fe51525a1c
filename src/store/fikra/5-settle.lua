-- Settlement: fk_charge charges a request's cost (at most its hold), releases the hold, trues
-- up the TPM bucket and appends the usage record. And fk_peek, the read-only look at the buckets.

-- fk_charge's numbers (ARGV[4]), in this order, packed by the gateway as little-endian
-- doubles: cost (nano-USD, priced by the gateway from the model's prices: input, cached
-- input, output), now (0 = Redis TIME), u_tpm, t_tpm (of live keys), test_tpm, the tokens the
-- TPM bucket is trued up to if the account is unverified (and for test keys) and if it is
-- trusted (tiers differ in whether cached prompt tokens count), then the start (ms, the
-- gateway's calendar) of the day and of the month the charge counts in.
local CHARGE_NUMBERS = '<ddddddddd'
local ZERO_DIGIT = 48

-- KEYS: acct, holds, holdexp, ledger
-- ARGV: request_id, record tail ("prompt completion cost outcome cached reasoning", the cost as
--   in the numbers: written again with the charge when that is less), ledger_maxlen, numbers
-- Reply: {1, charged, released, operator_loss}; {0} when no hold has this id (or it was voided);
--   {2} when the hold was released because its node was presumed dead (nothing charged: an
--   operator loss the gateway counts; the marker goes).
-- Commands: HGET, HMGET, HSET, HDEL, ZREM, XADD (and XTRIM on about one in ten; TIME, on
--   Redis's clock, only to take more tokens than were held, or for a new bucket or a changed
--   limit; an HMGET and an HDEL of library 12's key fields when the hold's key has no k: record
--   yet).
local function fk_charge(KEYS, ARGV)
  if not call then bind_globals() end
  if #KEYS ~= 4 or #ARGV ~= 4 then
    return redis.error_reply('ERR fikra library v' .. LIBRARY_VERSION .. ': fk_charge takes 4 keys and 4 arguments, got '
      .. #KEYS .. ' and ' .. #ARGV .. ' (a gateway of another version?)')
  end
  local acct, holds, holdexp, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local id = ARGV[1]
  local text = call('HGET', holds, id)
  if not text then return { 0 } end
  local amount, tokens, kind, key_id, model = match(text, '^(%d+) (%d+) (%a) %d+ %d+ %d+ (%S+) (.*)$')
  if kind == VOIDED then return { 0 } end
  local live = kind == 'l'
  local key_field = 'k:' .. key_id
  local a = call('HMGET', acct, 'tier', BUCKET_FIELD[kind] or 'b', key_field)
  if not a[1] then return { 0 } end
  if kind == RELEASED_DEAD then
    call('HDEL', holds, id)
    call('ZREM', holdexp, id)
    return { 2 }
  end
  local cost, now, u_tpm, t_tpm, test_tpm, counted_u, counted_t, day_start, month_start =
    unpack_struct(CHARGE_NUMBERS, ARGV[4])
  local given_now = now > 0 and now
  local key_held, ds, d, ms, m, l, key_legacy
  if live and key_id ~= '-' then key_held, ds, d, ms, m, l, key_legacy = key_record_read(acct, key_id, a[3]) end
  amount, tokens = amount + 0, tokens + 0
  local charged, loss = 0, 0
  local tpm, actual = test_tpm, counted_u
  if live then
    charged = min(cost, amount)
    loss = cost - charged
    tpm = u_tpm
    if a[1] == 'trusted' then tpm, actual = t_tpm, counted_t end
  end
  local rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet
  if live then
    rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet = account_read(acct, a[2])
  else
    rc, rl, ra, tc, tl, ta, legacy = buckets_read(acct, kind, a[2])
  end
  -- The requests bucket is written back as read; one never written is written as capacity 0
  -- at time 0, which the next admission fits to its limit as a new bucket (full).
  rc, rl, ra = bucket_or_new(rc, rl, ra, 0, 0)
  -- Giving tokens back to a bucket needs no refill first: refilled later or now, it holds the
  -- same (it only ever fills up to its capacity). So on Redis's clock the common settlement
  -- (the request used no more than it held) reads no clock at all; taking more than was held,
  -- a new bucket or a changed limit refill it to now first.
  if now > 0 or tc == nil or tl == nil or ta == nil or tc ~= tpm or actual > tokens then
    if now <= 0 then now = redis_now() end
    tc, tl, ta = bucket_or_new(tc, tl, ta, tpm, now)
    tc, tl, ta = fit(tc, tl, ta, tpm, now)
    tl, ta = refill(tc, tl, ta, now)
  end
  if actual < tokens then
    tl = min(tl + (tokens - actual) * UNITS, tc * UNITS)
  else
    tl = max(tl - (actual - tokens) * UNITS, 0)
  end
  -- Writes (a test key's hold holds nothing: its account's wallet stays as it is).
  if not live then
    call('HSET', acct, BUCKET_FIELD[kind], buckets_written(acct, kind, legacy, rc, rl, ra, tc, tl, ta))
  else
    local packed = account_written(acct, legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, max(balance - charged, 0),
      max(held - amount, 0))
    if key_id ~= '-' then
      if charged > 0 then ds, d, ms, m, l = spend_added(ds, d, ms, m, l, charged, day_start, month_start) end
      call('HSET', acct, 'b', packed,
        key_field, key_record_written(acct, key_id, key_legacy, max(key_held - amount, 0), ds, d, ms, m, l))
    else
      call('HSET', acct, 'b', packed)
    end
  end
  call('HDEL', holds, id)
  call('ZREM', holdexp, id)
  local tail = ARGV[2]
  if charged ~= cost then
    tail = gsub(tail, '^(%d+ %d+ )%d+', '%1' .. int(charged))
  end
  -- created_at only on a caller's clock: on Redis's, the entry's id (Redis's clock in ms) says it.
  local line = id .. ' ' .. key_id .. ' ' .. model .. ' ' .. tail
  local entry
  if given_now then
    entry = call('XADD', ledger, '*', 'records', line, 'created_at', int(given_now))
  else
    entry = call('XADD', ledger, '*', 'records', line)
  end
  -- The ledger is trimmed to about ledger_maxlen on one settlement in ten, those whose entry id
  -- ("ms-seq", 13 digits of ms until the year 2286) ends its ms in 0: an XADD that trims costs
  -- its argument and two rewrites for replication, and `~` trims whole nodes of 100 entries
  -- anyway, so the ledger overshoots by about as much as before.
  if byte(entry, 13) == ZERO_DIGIT then
    call('XTRIM', ledger, 'MAXLEN', '~', ARGV[3])
  end
  return { 1, charged, amount - charged, loss }
end

-- Library 11's name for fk_charge, whose arguments were different: refused, writing nothing.
local function fk_settle()
  return redis.error_reply('ERR fikra library v' .. LIBRARY_VERSION ..
    ': fk_settle is fk_charge since library 12, with other arguments (a gateway of another version?)')
end

-- KEYS: acct ; ARGV: now, u_rpm, u_tpm, t_rpm, t_tpm, kind (l|t). Reply: rates, or {-1}.
local function fk_peek(KEYS, ARGV)
  local refused = refuse_arity(KEYS, 1, 'fk_peek')
  if refused then return refused end
  local kind = ARGV[6]
  if kind ~= 't' then kind = 'l' end
  local a = call('HMGET', KEYS[1], 'tier', BUCKET_FIELD[kind])
  if not a[1] then return { -1 } end
  local now = clock(ARGV[1])
  local rpm, tpm = limits_for(a[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
  local rc, rl, ra, tc, tl, ta = buckets_read(KEYS[1], kind, a[2])
  rc, rl, ra = bucket_or_new(rc, rl, ra, rpm, now)
  tc, tl, ta = bucket_or_new(tc, tl, ta, tpm, now)
  rc, rl, ra = fit(rc, rl, ra, rpm, now)
  tc, tl, ta = fit(tc, tl, ta, tpm, now)
  return snapshot(rc, rl, ra, tc, tl, ta, now)
end
