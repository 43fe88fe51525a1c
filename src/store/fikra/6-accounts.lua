-- Accounts and keys: creation, top-ups, key records, the library's version.

-- KEYS: acct ; ARGV: signup credit, now. Reply: {1, created_at} or {-2} if it exists.
local function fk_create_account(KEYS, ARGV)
  if call('EXISTS', KEYS[1]) == 1 then return { -2 } end
  local now = clock(ARGV[2])
  call('HSET', KEYS[1], 'tier', 'unverified', 'created_at', int(now),
    'b', account_written(KEYS[1], false, false, nil, nil, nil, nil, nil, nil, tonumber(ARGV[1]), 0), 'xb', '')
  return { 1, now }
end

-- KEYS: acct, payrefs ; ARGV: amount, reference.
-- Reply: {1, balance, tier} credited; {0, balance, tier} duplicate; {-1} no account; {-4} too large.
local function fk_topup(KEYS, ARGV)
  local a = call('HMGET', KEYS[1], 'tier', 'b')
  if not a[1] then return { -1 } end
  local rc, rl, ra, tc, tl, ta, balance, held, legacy, legacy_wallet = account_read(KEYS[1], a[2])
  if call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return { 0, balance, a[1] } end
  local after = balance + tonumber(ARGV[1])
  if after > MAX_BALANCE then return { -4 } end
  local tier = a[1]
  if tier == 'unverified' then tier = 'trusted' end
  call('HSET', KEYS[1], 'b', account_written(KEYS[1], legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, after, held),
    'tier', tier)
  call('SADD', KEYS[2], ARGV[2])
  return { 1, after, tier }
end

-- KEYS: key record ; ARGV: key_id, account, kind, name ('' = none), spend cap ('' = none),
-- cap period (d|m|l, '' = none). Reply: 1, or -2 if it exists.
local function fk_put_key(KEYS, ARGV)
  if call('EXISTS', KEYS[1]) == 1 then return -2 end
  call('HSET', KEYS[1], 'key_id', ARGV[1], 'account', ARGV[2], 'kind', ARGV[3], 'name', ARGV[4], 'revoked', '0',
    'cap', ARGV[5] or '', 'cap_period', ARGV[6] or '')
  return 1
end

local function fk_version()
  return LIBRARY_VERSION
end

