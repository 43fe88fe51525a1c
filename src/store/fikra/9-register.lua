-- The functions the library registers (library 11's fk_admit and fk_settle only refuse).

redis.register_function('fk_hold', fk_hold)
redis.register_function('fk_charge', fk_charge)
redis.register_function('fk_admit', fk_admit)
redis.register_function('fk_settle', fk_settle)
redis.register_function{ function_name = 'fk_peek', callback = fk_peek, flags = { 'no-writes' } }
redis.register_function('fk_create_account', fk_create_account)
redis.register_function('fk_topup', fk_topup)
redis.register_function('fk_reap', fk_reap)
redis.register_function('fk_void', fk_void)
redis.register_function('fk_nodes', fk_nodes)
redis.register_function('fk_lease', fk_lease)
redis.register_function('fk_put_key', fk_put_key)
redis.register_function{ function_name = 'fk_version', callback = fk_version, flags = { 'no-writes' } }
