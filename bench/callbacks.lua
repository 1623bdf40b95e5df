-- wrk script: cycles through pre-signed Twilio StatusCallback requests.
-- Written by bench/run.py: one request per line, "target<TAB>body<TAB>signature".
-- Arguments (after `--`): data_file first count host [once]
--   first/count: the slice of lines to send (0-based first line)
--   host: the Host header, exactly as in the signed URL (e.g. 127.0.0.1:8080)
--   once: one pass, no repeats; afterwards only cheap GET /healthz (bench/run.py stops wrk)
local prepared = {}
local sent = 0
local once = false
local idle = nil

function init(args)
  local path, first, count, host = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  once = args[5] == "once"
  local index = 0
  for line in io.lines(path) do
    if index >= first + count then break end
    if index >= first then
      local target, body, signature = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)$")
      prepared[#prepared + 1] = wrk.format("POST", target, {
        ["Host"] = host,
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["User-Agent"] = "TwilioProxy/1.1",
        ["X-Twilio-Signature"] = signature,
      }, body)
    end
    index = index + 1
  end
  if #prepared == 0 then error("no requests in " .. path .. " at " .. first) end
  idle = wrk.format("GET", "/healthz", { ["Host"] = host })
end

-- wrk calls request() once per thread for a request it never sends (a probe): give it the
-- idle request, so that no callback is lost in `once` mode.
local probed = false

function request()
  if not probed then
    probed = true
    return idle
  end
  sent = sent + 1
  if once and sent > #prepared then return idle end
  return prepared[(sent - 1) % #prepared + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "non_2xx": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
