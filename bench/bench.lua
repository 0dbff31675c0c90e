-- wrk script for bench/run.py. Environment:
--   BENCH_BODY    the JSON request body; with BENCH_UNIQUE=1 every "{n}" in it is
--                 replaced by a per-request counter, so each body (and cache key) differs
--   BENCH_KEY     API key sent as "Authorization: Bearer ..." (optional)
--   BENCH_NONCE   mixed into unique bodies so two runs never share a body
-- done() prints one "BENCH_RESULT {...}" JSON line for run.py to parse.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. key
end

-- Defining request() makes wrk call Lua for every request, which costs throughput,
-- so it exists only when bodies must vary.
if os.getenv("BENCH_UNIQUE") == "1" then
   local counter = 0
   local template = wrk.body
   local nonce = os.getenv("BENCH_NONCE") or ""
   function request()
      counter = counter + 1
      local body = template:gsub("{n}", nonce .. "-" .. counter)
      return wrk.format(nil, nil, nil, body)
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
