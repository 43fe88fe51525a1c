-- Token buckets as in ratelimit.rs: capacity per minute, level in 1/60000 token, updated (ms).
-- A bucket is three locals (cap, level, at), never a table: the helpers take and return them.

-- The account-hash field holding the two buckets of key kind l or t, packed with BUCKETS.
local BUCKET_FIELD = { l = 'b', t = 'xb' }
local BUCKETS = '<dddddd'
-- Library 11's six fields per kind (requests then tokens, each capacity, level, updated).
local LEGACY_BUCKET_FIELDS = {
  l = { 'rc', 'rl', 'ra', 'tc', 'tl', 'ta' },
  t = { 'xrc', 'xrl', 'xra', 'xtc', 'xtl', 'xta' },
}

-- The buckets of kind `kind` as rc, rl, ra, tc, tl, ta, from `packed` (the field as read: ''
-- for an account created since library 12 that has no buckets yet) or, when the account has no
-- such field, from library 11's fields (nil where absent), and whether any of those was there
-- (the writer then deletes them).
local function buckets_read(acct, kind, packed)
  if packed then
    if packed == '' then return nil, nil, nil, nil, nil, nil, false end
    -- (Of a live b of library 13, the first six of its eight numbers: see ACCOUNT.)
    local rc, rl, ra, tc, tl, ta = unpack_struct(BUCKETS, packed)
    if rc < 0 then return nil, nil, nil, nil, nil, nil, false end
    return rc, rl, ra, tc, tl, ta, false
  end
  local f = LEGACY_BUCKET_FIELDS[kind]
  local v = call('HMGET', acct, f[1], f[2], f[3], f[4], f[5], f[6])
  local legacy = v[1] or v[2] or v[3] or v[4] or v[5] or v[6]
  return tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5]), tonumber(v[6]), legacy ~= nil
end

-- A bucket as read, or a new (full) one of `capacity` if any of its three numbers is missing.
local function bucket_or_new(cap, level, at, capacity, now)
  if cap == nil or level == nil or at == nil then
    return capacity, capacity * UNITS, now
  end
  return cap, level, at
end

-- The buckets packed, to be written to their field; deletes library 11's fields of that kind
-- if any was read.
local function buckets_written(acct, kind, legacy, rc, rl, ra, tc, tl, ta)
  if legacy then
    local f = LEGACY_BUCKET_FIELDS[kind]
    call('HDEL', acct, f[1], f[2], f[3], f[4], f[5], f[6])
  end
  return pack(BUCKETS, rc, rl, ra, tc, tl, ta)
end

-- Since library 13 the live field b holds the account's wallet too, after its buckets: ACCOUNT
-- = the six bucket numbers as in BUCKETS (all -1 before the account's first admission), then
-- balance and held (nano-USD). Library 12 kept balance and held as text fields of those names
-- and b as the buckets alone (48 bytes, or '' before the first admission): they are read when b
-- is shorter, and deleted when b is first written whole.
local ACCOUNT = '<dddddddd'
local ACCOUNT_BYTES = 64

-- The live buckets (rc, rl, ra, tc, tl, ta as buckets_read), then balance, held, whether library
-- 11's bucket fields were read and whether library 12's wallet fields were, from `packed` (the b
-- field as read) and, for an account written before library 13, the older fields (read here).
local function account_read(acct, packed)
  if packed and #packed == ACCOUNT_BYTES then
    local rc, rl, ra, tc, tl, ta, balance, held = unpack_struct(ACCOUNT, packed)
    if rc < 0 then rc, rl, ra, tc, tl, ta = nil, nil, nil, nil, nil, nil end
    return rc, rl, ra, tc, tl, ta, balance, held, false, false
  end
  local rc, rl, ra, tc, tl, ta, legacy = buckets_read(acct, 'l', packed)
  local w = call('HMGET', acct, 'balance', 'held')
  return rc, rl, ra, tc, tl, ta, tonumber(w[1] or 0) or 0, tonumber(w[2] or 0) or 0, legacy, true
end

-- The live field b packed (a bucket with any number missing is written as none yet: -1s);
-- deletes the older fields account_read says it read.
local function account_written(acct, legacy, legacy_wallet, rc, rl, ra, tc, tl, ta, balance, held)
  if legacy or legacy_wallet then
    local f = LEGACY_BUCKET_FIELDS.l
    call('HDEL', acct, 'balance', 'held', f[1], f[2], f[3], f[4], f[5], f[6])
  end
  if rc == nil or rl == nil or ra == nil or tc == nil or tl == nil or ta == nil then
    rc, rl, ra, tc, tl, ta = -1, -1, -1, -1, -1, -1
  end
  return pack(ACCOUNT, rc, rl, ra, tc, tl, ta, balance, held)
end

local function refill(cap, level, at, now)
  if now > at then
    if now - at >= UNITS then
      return cap * UNITS, now
    end
    return min(level + (now - at) * cap, cap * UNITS), now
  end
  return level, at
end

-- The bucket with its capacity changed to `capacity` (the account's tier or limits changed).
local function fit(cap, level, at, capacity, now)
  if capacity ~= cap then
    level, at = refill(cap, level, at, now)
    if capacity > cap then
      level = level + (capacity - cap) * UNITS
    end
    return capacity, min(level, capacity * UNITS), at
  end
  return cap, level, at
end

-- Milliseconds until `tokens` fit in a bucket refilled to now, 0 if they fit now, -1 for never.
local function wait_ms(cap, level, tokens)
  local needed = tokens * UNITS
  if needed <= level then return 0 end
  if cap == 0 then return -1 end
  return div_ceil(needed - level, cap)
end

local function reset_ms(cap, level)
  if cap == 0 then return 0 end
  return div_ceil(cap * UNITS - level, cap)
end

-- `rates...` of the replies: requests limit, remaining, reset ms, then the same for tokens,
-- of the buckets refilled to `now`.
local function snapshot(rc, rl, ra, tc, tl, ta, now)
  rl = refill(rc, rl, ra, now)
  tl = refill(tc, tl, ta, now)
  return { rc, div_floor(rl, UNITS), reset_ms(rc, rl), tc, div_floor(tl, UNITS), reset_ms(tc, tl) }
end
