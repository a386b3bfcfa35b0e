-- mo.lua example: Lua alert hooks of a monitoring object.
-- Put this file next to the object's mo.conf and name the functions in a limit element:
--   "overlimit": [{"name": "level1", "default": [100000000],
--                  "action-lua": "on_overlimit", "back2norm-lua": "on_back2norm"}]
-- The functions run on the collector's hook thread, never on a capture worker.

-- One line per event, appended to alerts.log in this object's directory. Rates have
-- fractions: "%.0f" rounds them, "%d" would fail on them ("no integer representation").
local function line(ev)
  return string.format("%s %s %s/%s/%s %s %s: %.0f (threshold %.0f)\n",
    string.format("%.3f", ev.time),
    ev.phase, ev.object, ev.mavg, ev.limit, ev.kind,
    table.concat(ev.keys, " "), ev.value, ev.threshold)
end

function on_overlimit(ev)
  -- xe.state survives between calls: count the alerts of each key.
  local key = table.concat(ev.keys, " ")
  xe.state[key] = (xe.state[key] or 0) + 1
  xe.append_file(xe.dir .. "/alerts.log", line(ev))
  if xe.state[key] >= 3 then
    xe.log("key " .. key .. " crossed " .. ev.limit .. " " .. xe.state[key] .. " times")
  end
end

function on_back2norm(ev)
  xe.append_file(xe.dir .. "/alerts.log", line(ev))
end
