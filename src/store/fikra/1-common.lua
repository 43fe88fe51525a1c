#!lua name=fikra
-- The money and rate-limit logic of the Redis store, run inside Redis as one library of
-- Redis 7 Functions. The library is one text made of the files of src/store/fikra/ in the
-- order of their names (`library.rs` joins them); this first file holds what all of them use.
-- Each function touches the keys of one account only (all under the
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

