-- The functions the library registers (library 11's fk_admit and fk_settle only refuse), each
-- binding the library functions to their locals on its first call (see `bind_globals`): the
-- per-request pair fk_hold and fk_charge do it themselves (a Lua call less per request), every
-- other through `bound`.

local function bound(f)
  return function(KEYS, ARGV)
    if not call then bind_globals() end
    return f(KEYS, ARGV)
  end
end


redis.register_function('fk_hold', fk_hold)
redis.register_function('fk_charge', fk_charge)
redis.register_function('fk_admit', bound(fk_admit))
redis.register_function('fk_settle', bound(fk_settle))
redis.register_function{ function_name = 'fk_peek', callback = bound(fk_peek), flags = { 'no-writes' } }
redis.register_function('fk_create_account', bound(fk_create_account))
redis.register_function('fk_topup', bound(fk_topup))
redis.register_function('fk_reap', bound(fk_reap))
redis.register_function('fk_void', bound(fk_void))
redis.register_function('fk_nodes', bound(fk_nodes))
redis.register_function('fk_lease', bound(fk_lease))
redis.register_function('fk_put_key', bound(fk_put_key))
redis.register_function{ function_name = 'fk_version', callback = bound(fk_version), flags = { 'no-writes' } }
