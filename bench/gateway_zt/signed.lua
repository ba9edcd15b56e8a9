-- signed.lua PREFIX: request mode (c). Thread i sends, once each, the pre-signed requests of
-- PREFIX.i (lines "<ts> <nonce> <sig> <content-sm3>" from gen_signed.c), all for ZT_PATH with
-- the Bearer token ZT_TOKEN. A nonce is accepted once: when a thread runs out it starts over,
-- and those replays are refused (403); run.sh then reports the run as invalid ("wrapped").
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local path = os.getenv("ZT_PATH")
  local auth = "Bearer " .. os.getenv("ZT_TOKEN")
  reqs = {}
  local f = assert(io.open(args[1] .. "." .. id, "r"))
  for line in f:lines() do
    local ts, nonce, sig, sm3 = line:match("^(%S+) (%S+) (%S+) (%S+)$")
    if ts then
      reqs[#reqs + 1] = wrk.format("GET", path, {
        ["Host"] = wrk.host, ["Authorization"] = auth, ["X-SM2-Signature"] = sig,
        ["X-SM2-Timestamp"] = ts, ["X-SM2-Nonce"] = nonce, ["X-Content-SM3"] = sm3 })
    end
  end
  f:close()
  i = 0
  wrapped = 0
  statuses = {}
end
function request()
  i = i + 1
  if i > #reqs then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local all, w, used = {}, 0, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
    w = w + t:get("wrapped")
  end
  for k, v in pairs(all) do io.write(string.format("STATUS %s %d\n", k, v)) end
  io.write(string.format("WRAPPED %d\n", w))
end
