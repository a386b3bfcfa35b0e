-- notify.lua: run a program for an alert from a Lua hook, with the same arguments an
-- action-script gets (object mavg limit notification-file key1 [key2 ...] value threshold),
-- directly (no shell) and with a timeout. Useful to add conditions in Lua before notifying.
--
--   local notify = xe.module("notify")
--   notify.program = "/usr/local/bin/page-oncall"
--   notify.timeout = 5
--   function on_overlimit(ev)
--     if ev.value > 10 * ev.threshold then notify.send(ev) end
--   end

local M = { program = nil, timeout = 10 }

local function whole(x)
  return string.format("%d", math.floor(x + 0.5))
end

-- The action-script argv of an event.
function M.argv(ev)
  local argv = { M.program, (ev.object:gsub("/", "_")), ev.mavg, ev.limit, ev.notification }
  for _, k in ipairs(ev.keys) do argv[#argv + 1] = k end
  argv[#argv + 1] = whole(ev.value)
  argv[#argv + 1] = whole(ev.threshold)
  return argv
end

-- Runs the program; returns its exit code, or nil and the reason.
function M.send(ev)
  assert(M.program, "notify.program is not set")
  local code, err = xe.run(M.argv(ev), M.timeout)
  if code ~= 0 then
    xe.log("notify: " .. M.program .. " -> " .. tostring(code or err))
  end
  return code, err
end

return M
