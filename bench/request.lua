-- wrk script: one fixed request, optional body, response checks, optional request cap.
--
-- wrk -t1 -cC -dDs --timeout 60s -s request.lua URL -- METHOD PATH TOKEN BODYFILE CHECKFILE MAXREQ
--   TOKEN     "-" for none (sent as X-Auth-Token)
--   BODYFILE  "-" for none (JSON body otherwise)
--   CHECKFILE "-" for none; else one Lua pattern per line, each must match a 200 body
--   MAXREQ    0 for no cap; else the thread stops after issuing that many requests
-- Prints one line "BENCHJSON {...}" with counts and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function readfile(name)
  local f = assert(io.open(name, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

function init(args)
  local method, path, token, bodyfile, checkfile = args[1], args[2], args[3], args[4], args[5]
  maxreq = tonumber(args[6]) or 0
  local headers = { ["Accept"] = "application/json" }
  local body = nil
  if bodyfile ~= "-" then
    body = readfile(bodyfile)
    headers["Content-Type"] = "application/json"
  end
  if token ~= "-" then
    headers["X-Auth-Token"] = token
  end
  checks = {}
  if checkfile ~= "-" then
    for line in readfile(checkfile):gmatch("[^\n]+") do
      table.insert(checks, line)
    end
  end
  req = wrk.format(method, path, headers, body)
  issued = 0
  ok = 0
  bad = 0
  badstatus = 0
end

function request()
  issued = issued + 1
  if maxreq > 0 and issued > maxreq then
    wrk.thread:stop()
  end
  return req
end

function response(status, headers, body)
  if status ~= 200 then
    badstatus = badstatus + 1
    return
  end
  for _, pattern in ipairs(checks) do
    if not string.find(body, pattern) then
      bad = bad + 1
      return
    end
  end
  ok = ok + 1
end

function done(summary, latency, requests)
  local n_ok, n_bad, n_badstatus = 0, 0, 0
  for _, thread in ipairs(threads) do
    n_ok = n_ok + thread:get("ok")
    n_bad = n_bad + thread:get("bad")
    n_badstatus = n_badstatus + thread:get("badstatus")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "ok": %d, "bad_body": %d, "bad_status": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d}\n',
    summary.requests, summary.duration, n_ok, n_bad, n_badstatus,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
