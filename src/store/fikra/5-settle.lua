-- Settlement: fk_settle charges a request's cost (at most its hold), releases the hold, trues
-- up the TPM bucket and appends the usage record. And fk_peek, the read-only look at the buckets.

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

