#!lua name=fikra
-- The money and rate-limit logic of the Redis store, run inside Redis as one library of
-- Redis 7 Functions. The library is one text made of the files of src/store/fikra/ in the
-- order of their names (`library.rs` joins them); this first file holds what all of them use.
-- Each function touches the keys of one account only (all under the account's hash tag, so it
-- works on Redis Cluster), checks everything before its first write (a function gets no
-- rollback), and reads the clock from TIME unless the caller passes one (tests with a manual
-- clock). Lua numbers are doubles: every amount here stays below 2^53 (balances are capped,
-- limits are at most 1e11 per minute), and every number written back is formatted with %d
-- (or packed as a double) so no digit is lost.
--
-- The per-request pair (fk_hold, fk_charge) is written for Lua 5.1's costs: their numbers come
-- in one argument packed with struct.pack ('<d' each: no string parsing), the text the gateway
-- can write (the hold's head, the ledger record's tail) comes written, the buckets are locals
-- and one packed field, and the admitted reply carries only what the gateway cannot compute.
--
-- Key layout (P = prefix, A = account id):
--   P:{A}:acct        hash   everything an admission and a settlement read and write, so each
--                            reads it with one HMGET and writes it with one HSET:
--                            tier, created_at (ms);
--                            b (live keys) and xb (test keys): the two rate buckets, packed
--                            struct '<dddddd': requests capacity, level, updated, then tokens
--                            capacity, level, updated (capacity per minute, level in 1/60000
--                            token, updated in ms), '' until the first admission (an account
--                            made by fk_create_account since library 12); library 11 kept them
--                            as six fields each (rc rl ra tc tl ta, xrc ... xta): read when b or
--                            xb is missing, and deleted when it is first written;
--                            since library 13, b then holds the wallet: balance and held
--                            (nano-USD) as two more doubles ('<dddddddd', the buckets -1 until
--                            the first admission); library 12 kept them as text fields balance
--                            and held: read when b is shorter, deleted when b is written whole;
--                            per live key (SPEC §10, kept for every key, capped or not, so a cap
--                            set later counts what the key already spent in its period): k:KEY,
--                            the key's record, packed struct '<dddddd': what the key's open
--                            holds hold, then day_start, day_spent, month_start, month_spent,
--                            lifetime_spent (ms, nano-USD; a charge counts in the period it
--                            settles in, on the gateway's calendar); library 12 kept it as h:KEY
--                            (the holds) and s:KEY ("day_start day_spent month_start month_spent
--                            lifetime_spent"): read when k:KEY is missing, deleted when it is
--                            first written. Fields, not keys of their own: a Function never
--                            declares a key that may not exist (a slot being migrated would
--                            refuse it)
--   P:{A}:holds       hash   request id -> "amount tokens kind in_price out_price expires key model"
--                            (the prices as admitted, for operators reading holds: settlement
--                            is priced by the gateway, which passes the cost);
--                            kind l (live) or t (test) for a hold; v or x for a marker that holds
--                            nothing: v = voided (its admission's answer was lost: a late
--                            fk_hold of that id refuses itself), x = released because its node
--                            was presumed dead (its settle then charges nothing); markers live
--                            until their expiry like holds and are dropped by the reaper silently
--   P:{A}:holdexp     zset   request id scored by expiry (ms), for the reaper
--   P:nodes           zset   gateway node tag scored by its last heartbeat (Redis TIME, ms): not
--                            an account key; only fk_nodes touches it
--   P:{A}:ledger      stream usage records: one entry per settlement or per lease call, its
--                            records in 'records' ("request_id key_id model prompt completion
--                            cost outcome cached reasoning" lines joined by ';') next to
--                            'created_at'; entries of library 11 settlements hold one record in
--                            fields of their own (request_id ... created_at)
--   P:{A}:payrefs     set    payment references credited to this account
--   P:{A}:lease:L     string last call applied for lease L: "seq granted_requests granted_tokens
--                            escrow charged loss" (expires an hour after the lease's last call)
--   a lease's escrow is a hold in P:{A}:holds under the lease id (model "lease"), reaped like any
--   hold when its worker stops renewing it
-- Library 10 kept the buckets in P:{A}:rate:live and P:{A}:rate:test and a capped key's spend in
-- s:KEY:P and r:REQUEST fields; none of them is read since library 11.

local LIBRARY_VERSION = 13
local UNITS = 60000
-- Largest balance an account may hold, in nano-USD (about 9 million USD): exact in a double.
local MAX_BALANCE = 9007199254740991

-- The library functions every Function calls, as locals: in Redis a global is read through
-- the empty globals table's __index (a miss, then the real table, then the field: about 200
-- instructions a use, against a few for a local). Globals cannot be read while the library
-- loads, so these are bound on a Function's first call (see 9-register.lua) and stay bound:
-- the same library functions every call.
local call, floor, min, max, pack, unpack_struct, format, match, gsub, byte

local function bind_globals()
  call, floor, min, max = redis.call, math.floor, math.min, math.max
  pack, unpack_struct = struct.pack, struct.unpack
  format, match, gsub, byte = string.format, string.match, string.gsub, string.byte
end

local function int(x)
  return format('%d', x)
end

-- Redis's clock in ms.
local function redis_now()
  local t = call('TIME')
  local us = t[2] + 0
  return t[1] * 1000 + (us - us % 1000) / 1000
end

local function clock(arg)
  local given = tonumber(arg)
  if given and given > 0 then
    return given
  end
  return redis_now()
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
  local q = floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function div_ceil(a, b)
  local q = div_floor(a, b)
  if q * b < a then q = q + 1 end
  return q
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
