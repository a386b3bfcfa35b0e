#!/usr/bin/env bash
# Soak test of the alert path under load and reloads: two workers receive the load
# generator's traffic, a moving average per object with a threshold that a few hundred busy
# hosts cross, and a SIGHUP every 3 s cycling the moving average through: thresholds changed
# (averages kept), its time changed (started anew: its alerts taken over), limit renamed
# (started anew: the old limit's alerts end), removed (every alert ends), back as first. Every 30 s: RSS, threads, open files, unreaped script processes, alerts
# started and ended, notification files. At the end the traffic stops and the last
# configuration (the first) stays: once back-to-normal passed and the scripts queued behind
# have run, every alert started must have ended (as many back2norm runs as action runs per notification file) and no notification
# file may be left.
# usage: benches/soak-reload.sh BENCH_DIR BIN [SECONDS] [RATE_PPS] [THRESHOLD_BPS]
#   BENCH_DIR: the directory holding nfgen.c (../shared/tools/bench)
#   e.g. benches/soak-reload.sh ../shared/tools/bench target/release/xenoeye 600 10000 130000
# SLOW=S (environment): each script sleeps S seconds and two run at once, so that scripts
# queue up behind the reloads' mass ends and starts (ends wait for their scripts to start
# before their files go; an alert may start again meanwhile).
set -u
src=$1 bin=$(realpath "$2") secs=${3:-60} rate=${4:-10000} thr=${5:-130000}
gen=${NFGEN:-/tmp/nfgen}
[ -x "$gen" ] || gcc -O2 -o "$gen" "$src/nfgen.c"
w=$(mktemp -d /tmp/xe-soak.XXXX)
mkdir -p "$w"/mo/ingress "$w"/mo/egress "$w"/exp "$w"/notifications "$w"/iplists
echo "10.11.0.0/16" > "$w"/iplists/my-nets
echo '[]' > "$w"/devices.conf
port=$((20000 + RANDOM % 20000))
max_scripts=16
[ -z "${SLOW:-}" ] || max_scripts=2
cat > "$w"/xenoeye.conf <<J
{ "capture": [ {"socket": {"listen-on": "127.0.0.1", "port": $port}}, {"socket": {"listen-on": "127.0.0.1", "port": $((port + 1))}} ],
  "rcvbufsize_m": 64, "max-scripts": $max_scripts, "templates": {"db": "$w/t.db"}, "devices": "$w/devices.conf", "mo-dir": "$w/mo",
  "export-dir": "$w/exp", "iplists-dir": "$w/iplists", "notifications-dir": "$w/notifications" }
J
for s in start stop; do
	printf '#!/bin/sh\necho "$@" >> %s/%s.log\nsleep %s\n' "$w" "$s" "${SLOW:-0}" > "$w/on-$s.sh"
	chmod +x "$w/on-$s.sh"
done
# mo.conf of object $1 (addresses on side $2) in variant $3: 0 as first, 1 thresholds doubled,
# 2 time 6 s instead of 5, 3 the limit renamed, 4 no moving average.
object() {
	local lim=level1 t=$thr time=5 mavg
	case $3 in 1) t=$((thr * 2)) ;; 2) time=6 ;; 3) lim=level2 ;; esac
	mavg=", \"mavg\": [ { \"name\": \"m\", \"time\": $time, \"fields\": [\"$2 host\", \"octets\"], \"overlimit\": [ { \"name\": \"$lim\", \"default\": [$t], \"back2norm-time\": 5, \"action-script\": \"$w/on-start.sh\", \"back2norm-script\": \"$w/on-stop.sh\" } ] } ]"
	[ "$3" = 4 ] && mavg=""
	echo "{ \"filter\": \"$2 net my-nets\", \"fwm\": [ {\"name\": \"by\", \"fields\": [\"octets desc\", \"$2 host\"], \"limit\": 20, \"time\": 5} ] $mavg }" > "$w/mo/$1/mo.conf"
}
variant() { object ingress dst "$1"; object egress src "$1"; }
lines() { cat "$w/$1.log" 2>/dev/null | wc -l; }
variant 0
"$bin" -c "$w"/xenoeye.conf > "$w"/out.log 2> "$w"/err.log &
pid=$!
sleep 1.5
n=$((rate * secs / 2))
"$gen" -p $port -n $n -r $((rate / 2)) -s 1 > /dev/null 2>&1 &
g1=$!
"$gen" -p $((port + 1)) -n $n -r $((rate / 2)) -s 2 > /dev/null 2>&1 &
g2=$!
v=0 t=0
while kill -0 $g1 2>/dev/null; do
	sleep 3
	t=$((t + 3)) v=$(((v + 1) % 5))
	variant $v
	kill -HUP $pid
	if [ $((t % 30)) = 0 ]; then
		echo "t=${t}s rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status) threads=$(ls /proc/$pid/task | wc -l)" \
			"fds=$(ls /proc/$pid/fd | wc -l) unreaped=$(ps --ppid $pid -o stat= | grep -c Z)" \
			"starts=$(lines start) ends=$(lines stop) notifications=$(ls "$w"/notifications | wc -l)"
	fi
done
wait $g2
variant 0
kill -HUP $pid
# Done once no notification file is left and the scripts queued behind stopped running.
last=""
for i in $(seq 300); do
	now="$(lines start) $(lines stop)"
	[ -z "$(ls "$w"/notifications)" ] && [ "$now" = "$last" ] && break
	last=$now
	sleep 2
done
i=$((i * 2))
echo "traffic stopped; after ${i}s: starts=$(lines start) ends=$(lines stop) notifications=$(ls "$w"/notifications | wc -l) rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
python3 - "$w" <<'PY'
import collections, sys
w = sys.argv[1]
def per_file(name):
    c = collections.Counter()
    try:
        for line in open(f"{w}/{name}.log"):
            c[line.split()[3]] += 1
    except FileNotFoundError:
        pass
    return c
starts, ends = per_file("start"), per_file("stop")
bad = {f: (starts[f], ends[f]) for f in starts.keys() | ends.keys() if starts[f] != ends[f]}
print(f"alerts started {sum(starts.values())}, ended {sum(ends.values())}; files whose starts and ends differ: {len(bad)} {sorted(bad.items())[:5]}")
PY
kill -TERM $pid
wait $pid
echo "exit status $?; reloads logged: $(grep -c 'reload: .* monitoring objects' "$w"/err.log)"
grep -v 'back to normal\|overlimit \|reload: \|taken up again' "$w"/err.log | sort | uniq -c | sort -rn | head -10
echo "workdir $w"
