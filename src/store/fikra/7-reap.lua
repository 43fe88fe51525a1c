-- Off the request path: the reaper, voids of admissions whose answer was lost, node liveness.

-- The node tag inside an id this gateway made: request ids are "req_" + tag + hex, lease ids
-- tag + "-" + worker + ":" + account (a tag is 8 base62 characters). nil for any other id.
local function owner_tag(id)
  return match(id, '^req_(%w%w%w%w%w%w%w%w)%x+$') or match(id, '^(%w%w%w%w%w%w%w%w)%-%d+:')
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
  local due = call('ZRANGEBYSCORE', keys.holdexp, '-inf', int(now), 'LIMIT', 0, most)
  local expired = {}
  for _, id in ipairs(due) do
    local text = call('HGET', keys.holds, id)
    expired[#expired + 1] = { id = id, hold = text and parse_hold(text) }
  end
  local orphans = {}
  if any_dead then
    local all = call('HGETALL', keys.holds)
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
      call('HDEL', keys.holds, entry.id)
      call('ZREM', keys.holdexp, entry.id)
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
-- the id until the hold TTL has passed, so an fk_hold of that id still on its way refuses
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
  local tier = call('HGET', keys.acct, 'tier')
  if not tier then return { -1 } end
  local text = call('HGET', keys.holds, id)
  local expires = now + tonumber(ARGV[7])
  if not text then
    mark(keys, id, VOIDED, expires)
    return { 2 }
  end
  local hold = parse_hold(text)
  if is_marker(hold) then return { 0 } end
  local field = BUCKET_FIELD[hold.kind]
  local packed = call('HGET', keys.acct, field)
  local rpm, tpm = limits_for(tier, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
  local rc, rl, ra, tc, tl, ta, legacy = buckets_read(keys.acct, hold.kind, packed)
  rc, rl, ra = bucket_or_new(rc, rl, ra, rpm, now)
  tc, tl, ta = bucket_or_new(tc, tl, ta, tpm, now)
  rc, rl, ra = fit(rc, rl, ra, rpm, now)
  tc, tl, ta = fit(tc, tl, ta, tpm, now)
  rl, ra = refill(rc, rl, ra, now)
  tl, ta = refill(tc, tl, ta, now)
  rl = min(rl + UNITS, rc * UNITS)
  tl = min(tl + hold.tokens * UNITS, tc * UNITS)
  -- Writes.
  release(keys, id, hold)
  if field == 'b' then
    -- The live buckets share b with the wallet release() just wrote: kept as it wrote it.
    local _, _, _, _, _, _, balance, held = account_read(keys.acct, call('HGET', keys.acct, 'b'))
    call('HSET', keys.acct, 'b', account_written(keys.acct, false, false, rc, rl, ra, tc, tl, ta, balance, held))
  else
    call('HSET', keys.acct, field, buckets_written(keys.acct, hold.kind, legacy, rc, rl, ra, tc, tl, ta))
  end
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
  local dead = call('ZRANGEBYSCORE', KEYS[1], int(now - forget_after), '(' .. int(now - dead_after), 'WITHSCORES')
  if ARGV[5] == '1' then
    call('ZREM', KEYS[1], tag)
  elseif tag ~= '' then
    call('ZADD', KEYS[1], int(now), tag)
  end
  call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now - forget_after))
  return dead
end

