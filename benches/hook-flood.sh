#!/usr/bin/env bash
# The load test (collector-bench.sh) three ways, alternating, to show that slow alert hooks do
# not slow collection:
#   base        the standard bench-conf (its moving averages never cross their thresholds)
#   flood       the same with a threshold every busy host crosses: a flood of overlimit,
#               update and back-to-normal events (notification files, log lines)
#   flood-lua   the flood with action-lua / back2norm-lua hooks that each wait 1 s on a program
# usage: benches/hook-flood.sh BENCH_DIR BIN PACKETS RATE_PPS [ROUNDS]
#   BENCH_DIR: the directory holding collector-bench.sh, nfgen.c and bench-conf/
# prints collector-bench's line per run, then the collector's hook summary of each run.
set -euo pipefail
src=$1 bin=$2 n=$3 rate=$4 rounds=${5:-3}
threshold=${THRESHOLD:-400000}
t=$(mktemp -d /tmp/xe-hook-flood.XXXX)
for v in base flood flood-lua; do
	cp -r "$src" "$t/$v"
done
for v in flood flood-lua; do
	sed -i "s/\[1000000000000\]/[$threshold]/" "$t/$v"/bench-conf/mo/*/mo.conf
done
for o in "$t"/flood-lua/bench-conf/mo/*; do
	sed -i 's/"back2norm-time": 10/"back2norm-time": 10, "action-lua": "slow", "back2norm-lua": "slow"/' "$o/mo.conf"
	echo 'function slow(ev) xe.run({"sleep", "1"}, 5) end' > "$o/mo.lua"
done
for r in $(seq "$rounds"); do
	for v in base flood flood-lua; do
		out=$("$t/$v/collector-bench.sh" "$v" "$bin" "$n" "$rate")
		echo "$out" | head -1
		w=$(echo "$out" | sed -n 's/^workdir //p')
		{ grep -o "alert events.*" "$w/stderr.log" || echo "(no summary)"; } | tail -1 | sed "s/^/    $v: /"
		rm -rf "$w"
	done
done
rm -rf "$t"
