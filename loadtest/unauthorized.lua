-- wrk -s loadtest/unauthorized.lua: the same request with a well-formed key nobody issued (401).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer fk_live_" .. string.rep("Q", 32)
wrk.body = '{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}'
