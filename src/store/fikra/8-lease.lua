-- Leases: a worker's share of an account's buckets and wallet, paid and renewed in one call.

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
--       count in (each key's record, k:), then 2 fields per usage record: the record as
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
  local id, seq = ARGV[1], tonumber(ARGV[2])
  local now = clock(ARGV[3])
  local a = call('HMGET', keys.acct, 'tier', 'b')
  if not a[1] then return { -1 } end
  local tier = a[1]
  local rpm, tpm = limits_for(tier, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
  local rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet = account_read(keys.acct, a[2])
  rc, rl, ra = bucket_or_new(rc, rl, ra, rpm, now)
  tc, tl, ta = bucket_or_new(tc, tl, ta, tpm, now)
  rc, rl, ra = fit(rc, rl, ra, rpm, now)
  tc, tl, ta = fit(tc, tl, ta, tpm, now)
  local last = call('GET', lease_key)
  if last then
    local last_seq = tonumber(match(last, '^(%d+)'))
    if last_seq > seq then return { 0 } end
    if last_seq == seq then
      local g = {}
      for v in string.gmatch(last, '%d+') do g[#g + 1] = tonumber(v) end
      return append(append({ 1, g[2], g[3], g[4], g[5], g[6] }, snapshot(rc, rl, ra, tc, tl, ta, now)), { tier_flag(tier) })
    end
  end
  local text = call('HGET', keys.holds, id)
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
  local from_escrow = min(total, escrow)
  local from_balance = min(total - from_escrow, max(balance - held, 0))
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
    local d = min(costs[i], cut)
    costs[i] = costs[i] - d
    cut = cut - d
    lines[i] = gsub(lines[i], '^(%S+ %S+ %S+ %d+ %d+ )%d+', '%1' .. int(costs[i]))
  end

  -- 2. Give back, then take.
  rl, ra = refill(rc, rl, ra, now)
  tl, ta = refill(tc, tl, ta, now)
  rl = min(rl + tonumber(ARGV[10]) * UNITS, rc * UNITS)
  local delta = tonumber(ARGV[11])
  if delta >= 0 then
    tl = min(tl + delta * UNITS, tc * UNITS)
  else
    tl = max(tl + delta * UNITS, 0)
  end
  local share = max(tonumber(ARGV[15]), 1)
  local granted_r = min(tonumber(ARGV[12]), div_floor(div_floor(rl, UNITS), share))
  local granted_t = min(tonumber(ARGV[13]), div_floor(div_floor(tl, UNITS), share))
  rl = rl - granted_r * UNITS
  tl = tl - granted_t * UNITS
  local want_escrow = tonumber(ARGV[14])
  if want_escrow < escrow then
    held = held - (escrow - want_escrow)
    escrow = want_escrow
  elseif want_escrow > escrow then
    local add = min(want_escrow - escrow, div_floor(max(balance - held, 0), share))
    held = held + add
    escrow = escrow + add
  end

  -- Each key's spend: what its records cost, after the loss was taken off.
  local spent_by_key, spending_keys = {}, {}
  for i = 1, count do
    local key_id = match(lines[i], '^%S+ (%S+) ')
    if key_id and key_id ~= '-' and costs[i] > 0 then
      if not spent_by_key[key_id] then
        spent_by_key[key_id] = 0
        spending_keys[#spending_keys + 1] = key_id
      end
      spent_by_key[key_id] = spent_by_key[key_id] + costs[i]
    end
  end

  -- 3. Writes.
  local fields = { 'b', account_written(keys.acct, legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, balance, max(held, 0)) }
  if #spending_keys > 0 then
    local names = {}
    for i, key_id in ipairs(spending_keys) do names[i] = 'k:' .. key_id end
    local records = call('HMGET', keys.acct, unpack(names))
    local day_start, month_start = tonumber(ARGV[16]), tonumber(ARGV[17])
    for i, key_id in ipairs(spending_keys) do
      local key_held, ds, d, ms, m, l, key_legacy = key_record_read(keys.acct, key_id, records[i])
      ds, d, ms, m, l = spend_added(ds, d, ms, m, l, spent_by_key[key_id], day_start, month_start)
      put(fields, names[i], key_record_written(keys.acct, key_id, key_legacy, key_held, ds, d, ms, m, l))
    end
  end
  call('HSET', keys.acct, unpack(fields))
  -- The call's usage records go into one ledger entry (one XADD per call, not per request):
  -- 'records' = "request_id key_id model prompt completion cost outcome" joined by ';'.
  if count > 0 then
    call('XADD', ledger, 'MAXLEN', '~', ARGV[9], '*', 'records', table.concat(lines, ';'), 'created_at', int(now))
  end
  if escrow > 0 then
    local expires = now + tonumber(ARGV[8])
    call('HSET', keys.holds, id, table.concat({ int(escrow), '0', 'l', '0', '0', int(expires), '-', 'lease' }, ' '))
    call('ZADD', keys.holdexp, int(expires), id)
  elseif text then
    call('HDEL', keys.holds, id)
    call('ZREM', keys.holdexp, id)
  end
  local charged = total - loss
  call('SET', lease_key, table.concat({ int(seq), int(granted_r), int(granted_t), int(escrow), int(charged),
    int(loss) }, ' '), 'PX', LEASE_MEMORY_MS)
  return append(append({ 1, granted_r, granted_t, escrow, charged, loss }, snapshot(rc, rl, ra, tc, tl, ta, now)),
    { tier_flag(tier) })
end

