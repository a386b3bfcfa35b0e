#!/usr/bin/env bash
# Soak test of the running daemon in an alert storm: the load generator's traffic for a while,
# with thresholds so low that tens of thousands of keys alert (the hook thread far behind), a
# SIGHUP every few seconds that changes a threshold, then SIGTERM. What it checks and prints:
#   - every packet sent is counted in the exported windows (none lost to reloads or the storm);
#   - every reload keeps its moving averages and ends no alert ("alerts ... ended" lines);
#   - the collector's memory (RSS) along the way;
#   - how long the stop takes, and that the notification files left are exactly the alerts
#     whose action script ran and whose back2norm script did not.
# usage: benches/soak-storm.sh BENCH_DIR BIN [SECONDS] [RATE_PPS] [RELOAD_EVERY_S]
#   BENCH_DIR: the directory holding nfgen.c and bench-conf/ (as for mavg-cost.sh)
# Defaults: 180 s at 10,000 datagrams/s (300,000 flows/s), a reload every 15 s. It takes the
# machine's two cores (collector, generator, scripts): run nothing else beside it.
# WORKERS=2 (environment): two capture sockets, so two workers share the averages' tables
# (two shards each), each fed half the rate by its own generator.
# KEEP=1 (environment): the work directory (configuration, logs, exports) is kept.
# LUA=1 (environment): the limits also name Lua hooks, those of lua/examples/alert-log.lua
# (each object's mo.lua, edited at every reload so that it is loaded again with its xe.state
# of tens of thousands of keys carried over). Then also checked: no hook failed or was cut,
# and each start and back2norm call wrote its line (as many as the scripts run plus those a
# stop left waiting, unless the exit summary counts Lua calls dropped).
set -euo pipefail
src=$1 bin=$(realpath "$2") secs=${3:-180} rate=${4:-10000} every=${5:-15}
gen=${NFGEN:-/tmp/nfgen}
[ -x "$gen" ] || gcc -O2 -o "$gen" "$src/nfgen.c"
w=$(mktemp -d /tmp/xe-soak.XXXX)
trap 'pkill -KILL -f "$w/xenoeye.conf" 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $w" || rm -rf "$w"' EXIT
port=$((20000 + RANDOM % 20000))
cp -r "$src/bench-conf/mo" "$src/bench-conf/iplists" "$src/bench-conf/devices.conf" "$w/"
mkdir -p "$w/exp" "$w/notifications"
sed -e "s#@W@#$w#g" -e "s#@PORT@#$port#g" "$src/bench-conf/xenoeye.conf.in" > "$w/xenoeye.conf"
workers=${WORKERS:-1}
if [ "$workers" = 2 ]; then
	sed -i "s#\(\"capture\": \[ {[^]]*}\)#\1, {\"socket\": {\"listen-on\": \"127.0.0.1\", \"port\": \"$((port + 1))\"}}#" "$w/xenoeye.conf"
	grep -q "$((port + 1))" "$w/xenoeye.conf" || { echo "WORKERS=2: no second socket in the configuration" >&2; exit 2; }
fi
for kind in act b2n; do
	printf '#!/bin/sh\necho "$5" >> %s/%s.log\n' "$w" "$kind" > "$w/$kind.sh"
	chmod +x "$w/$kind.sh"
	touch "$w/$kind.log"
done
# Two averages per object with scripts: bytes per address (a few hundred keys over 15,000 B/s)
# and packets per address and protocol (tens of thousands over 8/s).
lua=${LUA:-}
here=$(cd "$(dirname "$0")" && pwd)
for o in ingress egress; do
	host=$([ $o = ingress ] && echo "dst host" || echo "src host")
	[ -z "$lua" ] || cp "$here/../lua/examples/alert-log.lua" "$w/mo/$o/mo.lua"
	python3 - "$w/mo/$o/mo.conf" "$host" "$w" "$lua" <<'PY'
import re, sys
path, host, w, lua = sys.argv[1:]
scripts = f'"action-script": "{w}/act.sh", "back2norm-script": "{w}/b2n.sh"'
if lua:
    scripts += ', "action-lua": "on_overlimit", "back2norm-lua": "on_back2norm"'
mavg = f'''"mavg": [
  {{ "name": "bps", "time": 10, "fields": ["{host}", "octets"],
    "overlimit": [ {{ "name": "level1", "default": [15000], "back2norm-time": 5, {scripts} }} ] }},
  {{ "name": "pps", "time": 5, "fields": ["{host}", "proto", "packets"],
    "overlimit": [ {{ "name": "level1", "default": [8], "back2norm-time": 5, {scripts} }} ] }}
]
}}
'''
s = open(path).read()
s2 = re.sub(r'"mavg": \[.*\]\s*\}\s*$', mavg, s, flags=re.S)
assert s2 != s
open(path, 'w').write(s2)
PY
done
"$bin" -c "$w/xenoeye.conf" > /dev/null 2> "$w/err.log" &
pid=$!
sleep 1
senders=()
for i in $(seq 0 $((workers - 1))); do
	seed=() # the first generator with its default seed, the second with another
	[ "$i" = 0 ] || seed=(-s $((i + 1)))
	"$gen" -p $((port + i)) -n $((secs * rate / workers)) -r $((rate / workers)) "${seed[@]}" > "$w/nfgen$i.out" 2>&1 &
	senders+=($!)
done
sender=${senders[0]}
echo "time_s rss_mb notification_files action_scripts back2norm_scripts"
t0=$(date +%s)
flip=0
while kill -0 $sender 2>/dev/null; do
	sleep "$every"
	# Thresholds change at every reload (15,000 <-> 17,000 B/s): averages must be kept.
	if [ $flip = 0 ]; then a=15000 b=17000 flip=1; else a=17000 b=15000 flip=0; fi
	sed -i "s/\"default\": \[$a\]/\"default\": [$b]/" "$w"/mo/*/mo.conf
	[ -z "$lua" ] || for f in "$w"/mo/*/mo.lua; do echo "-- reloaded at $(date +%s.%N)" >> "$f"; done
	kill -HUP $pid
	rss=$(awk '/VmRSS/ {print int($2 / 1024)}' /proc/$pid/status)
	echo "$(( $(date +%s) - t0 )) $rss $(find "$w/notifications" -type f | wc -l) $(wc -l < "$w/act.log") $(wc -l < "$w/b2n.log")"
done
wait "${senders[@]}"
sleep 12 # the last 5 s windows written
stop0=$(date +%s.%N)
kill -TERM $pid
wait $pid || true
stop_s=$(python3 -c "print(round($(date +%s.%N) - $stop0, 1))")
sent=0
for f in "$w"/nfgen*.out; do
	sent=$((sent + $(sed 's/.*pkts=\([0-9]*\).*/\1/' "$f")))
done
got=$(cat "$w"/exp/ingress_all_*.sql "$w"/exp/egress_all_*.sql | python3 -c 'import re, sys; print(sum(int(p) for p, _ in re.findall(r"to_timestamp\((?:\d+)\),\s*(\d+)\s*,\s*(\d+)", sys.stdin.read())))')
reloads=$(grep -c "reload: .* kept their averages" "$w/err.log" || true)
kept=$(grep -c "reload: .* 4 moving averages (4 kept their averages)" "$w/err.log" || true)
ended=$(grep -c "alerts of moving averages or limits removed or started anew ended" "$w/err.log" || true)
files=$(find "$w/notifications" -type f | wc -l)
acts=$(wc -l < "$w/act.log") ends=$(wc -l < "$w/b2n.log")
echo "packets counted $got of $sent sent"
echo "reloads $reloads, keeping all 4 averages $kept, ending alerts $ended"
echo "stop took $stop_s s; $(grep -o 'stop: [0-9]* alert events left' "$w/err.log" || echo 'no event left')"
echo "notification files $files; action scripts $acts - back2norm scripts $ends = $((acts - ends))"
ok=1
[ "$got" = "$sent" ] || { echo "FAIL: packets lost"; ok=0; }
[ "$kept" = "$reloads" ] && [ "$ended" = 0 ] || { echo "FAIL: a reload lost averages or ended alerts"; ok=0; }
[ "$files" = $((acts - ends)) ] || { echo "FAIL: notification files do not match the scripts run"; ok=0; }
if [ -n "$lua" ]; then
	summary=$(grep -o 'lua hooks [0-9]* (errors [0-9]*, cut [0-9]*, dropped [0-9]*)' "$w/err.log" || echo none)
	read -r calls errors cut dropped <<< "$(tr -cs '0-9' ' ' <<< "$summary")"
	lua_starts=$(cat "$w"/mo/*/alerts.log | grep -c ' start ' || true)
	lua_ends=$(cat "$w"/mo/*/alerts.log | grep -c ' back2norm ' || true)
	echo "$summary; lines written: $lua_starts start, $lua_ends back2norm"
	[ "$summary" != none ] && [ "$errors" = 0 ] && [ "$cut" = 0 ] || { echo "FAIL: Lua hooks failed or were cut"; grep -m5 -i 'lua' "$w/err.log"; ok=0; }
	[ "$((lua_starts + lua_ends))" = "${calls:-x}" ] || { echo "FAIL: Lua calls and lines written differ"; ok=0; }
	# Lua calls go out as events are taken; scripts a stop left waiting did not run.
	read -r left_acts left_ends <<< "$(grep -o 'not started ([0-9]* action, [0-9]* back2norm)' "$w/err.log" | sed 's/[^(]*(\([0-9]*\) action, \([0-9]*\) .*/\1 \2/' || echo 0 0)"
	if [ "${dropped:-x}" = 0 ] && { [ "$lua_starts" != $((acts + ${left_acts:-0})) ] || [ "$lua_ends" != $((ends + ${left_ends:-0})) ]; }; then
		echo "FAIL: no Lua call dropped, yet the Lua lines differ from the scripts run and left ($left_acts action, $left_ends back2norm)"; ok=0
	fi
fi
[ $ok = 1 ] && echo "soak: OK"
