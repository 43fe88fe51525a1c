-- Token buckets as in ratelimit.rs, and the helpers the replies share.

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

