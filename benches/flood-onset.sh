#!/usr/bin/env bash
# What a flood of new keys costs the collector live: datagrams the kernel drops while every
# flow brings a new key (tables growing into fresh memory) and at window starts.
# The load test's bench-conf plus a moving average per external source address on ingress
# (nfgen's 131,072 keys per exporter make ~1.4M window keys per 5 s and ~1.9M averaged keys),
# 900,000 datagrams at 66,667/s (~600,000 flows/s), the kernel's default receive buffer unless
# RCVBUF_M is given. nfgen runs on CPU 0; the collector is not pinned.
# usage: benches/flood-onset.sh BENCH_DIR BIN[,BIN...] [ROUNDS]
#   BENCH_DIR: the directory holding nfgen.c and bench-conf/; several BINs run alternately.
# Prints per run: kernel drops in the whole run, in its first 6 s and in its last 7.5 s,
# packets counted in the exports against those sent, CPU time, and how long the worker
# waited for a CPU (schedstat: on a 2-core machine the load generator competes with it).
# Never run it beside another benchmark.
set -euo pipefail
here=$1 bins=$2 rounds=${3:-3} rcv=${RCVBUF_M:-0}
gen=${NFGEN:-/tmp/nfgen}
[ -x "$gen" ] || gcc -O2 -o "$gen" "$here/nfgen.c"
udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }

run() { # BIN
	local bin=$1 w port pid genpid d0 d1 d2 sent got cpu waited
	w=$(mktemp -d /tmp/xe-flood.XXXX)
	port=$((20000 + RANDOM % 20000))
	cp -r "$here/bench-conf/mo" "$here/bench-conf/iplists" "$here/bench-conf/devices.conf" "$w/"
	chmod -R u+w "$w"
	mkdir -p "$w/exp" "$w/notifications" "$w/clsf" "$w/geoip"
	sed -e "s#@W@#$w#g" -e "s#@PORT@#$port#g" -e "s#\"rcvbufsize_m\": 64#\"rcvbufsize_m\": $rcv#" "$here/bench-conf/xenoeye.conf.in" >"$w/xenoeye.conf"
	[ "$rcv" = 0 ] && sed -i "/rcvbufsize_m/d" "$w/xenoeye.conf"
	# The shipped mavg element ends with "} ] }" on its own line: the per-source one goes after it.
	sed -i 's/back2norm-time": 10 } \] }$/back2norm-time": 10 } ] }, { "name": "by_src", "time": 10, "mem-m": 2048, "fields": ["src host", "packets"], "overlimit": [ { "name": "l", "default": [1000000000], "back2norm-time": 10 } ] }/' "$w/mo/ingress/mo.conf"
	grep -q '"by_src", "time": 10' "$w/mo/ingress/mo.conf" || { echo "bench-conf changed: no place for the extra average" >&2; exit 1; }
	d0=$(udp_drops)
	"$bin" -c "$w/xenoeye.conf" >"$w/stdout.log" 2>"$w/stderr.log" &
	pid=$!
	sleep 1.5
	taskset -c 0 "$gen" -p "$port" -n 900000 -r 66667 -k 131072 >/dev/null 2>"$w/gen.txt" &
	genpid=$!
	sleep 6
	d1=$(udp_drops)
	wait "$genpid"
	d2=$(udp_drops)
	sleep 7
	cpu=$(awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$pid/stat")
	waited=$(for t in /proc/$pid/task/*; do if grep -q "^udp" "$t/comm"; then awk '{printf "%.2f", $2 / 1e9}' "$t/schedstat"; fi; done)
	kill -TERM "$pid"
	wait "$pid" || true
	sent=$(sed 's/.*pkts=\([0-9]*\).*/\1/' "$w/gen.txt")
	got=$(cat "$w"/exp/ingress_all_*.sql "$w"/exp/egress_all_*.sql 2>/dev/null | python3 -c 'import re,sys; print(sum(int(p) for p, _ in re.findall(r"to_timestamp\((?:\d+)\),\s*(\d+)\s*,\s*(\d+)", sys.stdin.read())))')
	echo "$(basename "$bin"): kernel drops $((d2 - d0)) (first 6 s $((d1 - d0)), last 7.5 s $((d2 - d1))); packets counted $got/$sent; cpu ${cpu}s; worker waited for a CPU ${waited}s"
	rm -rf "$w"
}

IFS=, read -r -a binlist <<<"$bins"
for _ in $(seq "$rounds"); do
	for b in "${binlist[@]}"; do run "$(realpath "$b")"; done
done
