-- telegram.lua: Telegram message files for xe-tele-bot.py, written from Lua hooks: exactly the
-- messages of scripts/telegram-bot/on-start.sh and on-stop.sh, without forking a shell.
--
--   local tg = xe.module("telegram")
--   tg.dir = "/var/lib/xenoeye/telemsg/"      -- must be in lua.write-dirs of xenoeye.conf
--   function on_overlimit(ev) tg.on_start(ev) end
--   function on_back2norm(ev) tg.on_stop(ev) end
--
-- The first key is shown as IP and the second as proto ("-" without one); value and threshold
-- are shown in bits per second. An underlimit's start while exporters are silent names them
-- at the end (the drop may be theirs).

local M = { dir = "/var/lib/xenoeye/telemsg/" }

local function whole(x)
  return math.floor(x + 0.5)
end

local function basename(path)
  return (path:gsub("^.*/", ""))
end

-- The message text (`what` is "Overlimit detected", "Underlimit is over", ...).
function M.message(what, ev, now)
  now = now or xe.time()
  local stamp = xe.date("%Y-%m-%d %H:%M:%S", now) .. string.format(".%03d", math.floor((now % 1) * 1000))
  local silent = ""
  if ev.kind == "underlimit" and ev.phase == "start" and ev.silent_exporters and #ev.silent_exporters > 0 then
    silent = ", exporters silent: <b>" .. table.concat(ev.silent_exporters, " ") .. "</b>"
  end
  return string.format("%s at '<b>%s</b>', object '<b>%s</b>', IP <b>%s</b>, proto <b>%s</b>, BPS <b>%d</b>, limit %d BPS%s",
    what, stamp, ev.object:gsub("/", "_"), ev.keys[1] or "-", ev.keys[2] or "-", whole(ev.value) * 8, whole(ev.threshold) * 8, silent)
end

local function write(ext, what, ev)
  local dir = M.dir:gsub("/*$", "/")
  local path = dir .. basename(ev.notification) .. ext
  xe.write_file(path, M.message(what, ev))
  return path
end

-- "Overlimit" or "Underlimit", as the event's limit is.
local function limit(ev)
  return ev.kind == "underlimit" and "Underlimit" or "Overlimit"
end

function M.on_start(ev)
  return write(".n", limit(ev) .. " detected", ev)
end

function M.on_stop(ev)
  return write(".s", limit(ev) .. " is over", ev)
end

return M
