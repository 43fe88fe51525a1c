-- wrk -s loadtest/chat.lua: a small non-streamed chat completion (served by the sandbox).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("FIKRA_KEY") or "")
wrk.body = '{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"Habari ya asubuhi?"}]}'
