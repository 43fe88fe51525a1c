-- Admission: fk_admit checks a request against its account's buckets, wallet and key cap, and
-- takes its hold.

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

