-- headers.lua: adds the request headers named in the environment to every wrk request, so the
-- same request (token, device signature) goes to nginx and to the gateway.
--   ZT_TOKEN   Authorization: Bearer <token>       (unset: no Authorization header)
--   ZT_SIG     X-SM2-Signature: <value>             (token mode, reused: verified once, cached)
-- At the end it prints "STATUS <code> <count>" lines: a benchmark of refusals is no benchmark,
-- so run.sh refuses a run with any status other than 200.
local tok = os.getenv("ZT_TOKEN")
local sig = os.getenv("ZT_SIG")
if tok and tok ~= "" then wrk.headers["Authorization"] = "Bearer " .. tok end
if sig and sig ~= "" then wrk.headers["X-SM2-Signature"] = sig end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
  end
  for k, v in pairs(all) do io.write(string.format("STATUS %s %d\n", k, v)) end
end
