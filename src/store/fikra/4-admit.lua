-- Admission: fk_hold checks a request against its account's buckets, wallet and key cap, and
-- takes its hold.

-- fk_hold's numbers (ARGV[5]), in this order, packed by the gateway as little-endian doubles:
-- input_upper, requested_output, client_cap (0|1), refuse_clamp (1 = answer {5, output_cap}
-- rather than admit with a lowered cap), live (1 live key | 0 test key), in_price, out_price,
-- now (0 = Redis TIME), u_rpm, u_tpm, t_rpm, t_tpm, hold_ttl_ms, key spend cap (-1 = none),
-- its period (1 day | 2 month | 3 lifetime), the period's start (the gateway's clock: the same
-- instant as `now` in its calendar), then the hold and tokens the gateway wrote into `head`.
local HOLD_NUMBERS = '<dddddddddddddddddd'
local PERIOD_LETTERS = { 'd', 'm', 'l' }

-- KEYS: acct, holds, holdexp
-- ARGV: request_id, key_id, model, head, numbers (above). head: the hold text's start as the
--   gateway expects it, "hold tokens kind in_price out_price " with the hold and tokens of an
--   admission at the requested output cap (a lower cap makes this function write its own).
-- Reply: {1, output_cap, trusted (1|0), requests level, tokens level} admitted (the buckets
--   after it: the gateway derives hold, tokens and rates from them and what it sent);
--   {2, bucket(0 rpm|1 tpm), limit, used, requested, retry_ms(-1 never), rates...};
--   {3, limit, requested, rates...} too large; {4, balance, available, needed, rates...}
--   insufficient; {5, output_cap} would clamp; {6, cap, spent, key_held, needed, rates...} the
--   key's cap leaves no room; {-1} no account; {-2} duplicate id (a hold or a marker has this
--   id: a voided admission refuses itself here, writing nothing; a refusal on the way there
--   writes nothing either).
-- Commands: TIME, HMGET, then on admission HSETNX (the id check, the first write), HSET, ZADD;
--   before a key's first k: record is written, one HMGET more of library 12's fields for it.
local function fk_hold(KEYS, ARGV)
  if not call then bind_globals() end
  if #KEYS ~= 3 or #ARGV ~= 5 then
    return redis.error_reply('ERR fikra library v' .. LIBRARY_VERSION .. ': fk_hold takes 3 keys and 5 arguments, got '
      .. #KEYS .. ' and ' .. #ARGV .. ' (a gateway of another version?)')
  end
  local acct, holds, holdexp = KEYS[1], KEYS[2], KEYS[3]
  local id, key_id, model, head = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local input, requested, client_cap, refuse_clamp, live, in_price, out_price, now, u_rpm, u_tpm, t_rpm, t_tpm, ttl,
    cap, cap_p, cap_start, head_hold, head_tokens = unpack_struct(HOLD_NUMBERS, ARGV[5])
  if now <= 0 then now = redis_now() end
  local kind, key_field = 't', nil
  local a
  if live == 1 then
    kind, key_field = 'l', 'k:' .. key_id
    a = call('HMGET', acct, 'tier', 'b', key_field)
  else
    a = call('HMGET', acct, 'tier', 'xb')
  end
  if not a[1] then return { -1 } end
  local rpm, tpm, trusted = u_rpm, u_tpm, 0
  if a[1] == 'trusted' then rpm, tpm, trusted = t_rpm, t_tpm, 1 end
  local rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet
  if live == 1 then
    rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet = account_read(acct, a[2])
  else
    rc, rl, ra, tc, tl, ta, legacy = buckets_read(acct, kind, a[2])
  end
  rc, rl, ra = bucket_or_new(rc, rl, ra, rpm, now)
  tc, tl, ta = bucket_or_new(tc, tl, ta, tpm, now)
  rc, rl, ra = fit(rc, rl, ra, rpm, now)
  tc, tl, ta = fit(tc, tl, ta, tpm, now)

  -- 1. The wallet (test keys never touch it).
  local output_cap = requested
  local input_cost = input * in_price
  local key_held, ds, d, ms, m, l, key_legacy
  if live == 1 then
    key_held, ds, d, ms, m, l, key_legacy = key_record_read(acct, key_id, a[3])
    local available = max(balance - held, 0)
    local needed = input_cost + out_price
    if available < needed then
      return append({ 4, balance, available, needed }, snapshot(rc, rl, ra, tc, tl, ta, now))
    end
    if out_price > 0 then
      output_cap = min(output_cap, div_floor(available - input_cost, out_price))
    end
    -- 1b. The key's own cap: its spend in this period plus its open holds stay within it.
    if cap >= 0 then
      local spent = spent_in(ds, d, ms, m, l, cap_p, cap_start)
      local room = max(cap - spent - key_held, 0)
      if room < needed then
        return append({ 6, cap, spent, key_held, needed }, snapshot(rc, rl, ra, tc, tl, ta, now))
      end
      if out_price > 0 then
        output_cap = min(output_cap, div_floor(room - input_cost, out_price))
      end
    end
  end
  -- 2. A request larger than the whole TPM bucket can never pass.
  if client_cap == 0 then
    output_cap = min(output_cap, max(tc - input, 0))
  end
  local tokens = input + output_cap
  if output_cap == 0 or tokens > tc then
    return append({ 3, tc, input + max(output_cap, 1) }, snapshot(rc, rl, ra, tc, tl, ta, now))
  end
  if refuse_clamp == 1 and output_cap < requested then
    return { 5, output_cap }
  end
  -- 3. RPM, then TPM; a denial takes nothing.
  rl, ra = refill(rc, rl, ra, now)
  tl, ta = refill(tc, tl, ta, now)
  local wait = wait_ms(rc, rl, 1)
  if wait ~= 0 then
    return append({ 2, 0, rc, rc - div_floor(rl, UNITS), 1, wait }, snapshot(rc, rl, ra, tc, tl, ta, now))
  end
  wait = wait_ms(tc, tl, tokens)
  if wait ~= 0 then
    return append({ 2, 1, tc, tc - div_floor(tl, UNITS), tokens, wait }, snapshot(rc, rl, ra, tc, tl, ta, now))
  end
  -- 4. Everything checked: write, the hold first (it is the duplicate-id check).
  local hold = 0
  if live == 1 then hold = input_cost + output_cap * out_price end
  local expires = int(now + ttl)
  if hold ~= head_hold or tokens ~= head_tokens then
    head = int(hold) .. ' ' .. int(tokens) .. ' ' .. match(head, '^%d+ %d+ (.*)$')
  end
  if call('HSETNX', holds, id, head .. expires .. ' ' .. key_id .. ' ' .. model) == 0 then return { -2 } end
  rl = rl - UNITS
  tl = tl - tokens * UNITS
  if live == 1 then
    call('HSET', acct, 'b', account_written(acct, legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, balance, held + hold),
      key_field, key_record_written(acct, key_id, key_legacy, key_held + hold, ds, d, ms, m, l))
  else
    call('HSET', acct, 'xb', buckets_written(acct, kind, legacy, rc, rl, ra, tc, tl, ta))
  end
  call('ZADD', holdexp, expires, id)
  return { 1, output_cap, trusted, rl, tl }
end

-- Library 11's name for fk_hold, whose arguments were different: refused, writing nothing.
local function fk_admit()
  return redis.error_reply('ERR fikra library v' .. LIBRARY_VERSION ..
    ': fk_admit is fk_hold since library 12, with other arguments (a gateway of another version?)')
end
