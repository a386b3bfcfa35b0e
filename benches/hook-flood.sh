#!/usr/bin/env bash
# The load test (collector-bench.sh) three ways, alternating, to show that slow alert hooks do
# not slow collection:
#   base        the standard bench-conf (its moving averages never cross their thresholds)
#   flood       the same with a threshold every busy host crosses: a flood of overlimit,
#               update and back-to-normal events (notification files, log lines)
#   flood-lua   the flood with action-lua / back2norm-lua hooks that each wait 1 s on a program
# usage: benches/hook-flood.sh BENCH_DIR BIN PACKETS RATE_PPS [ROUNDS]
#   BENCH_DIR: the directory holding collector-bench.sh, nfgen.c and bench-conf/
# Notification files go to a tmpfs (/dev/shm): on an ext4 without a journal, creating files
# soon after many were deleted costs the kernel more than the whole hook thread does.
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
for v in base flood flood-lua; do
	sed -i "s#\"notifications-dir\": \"[^\"]*\"#\"notifications-dir\": \"/dev/shm/xe-flood-$v\"#" "$t/$v/bench-conf/xenoeye.conf.in"
done
for o in "$t"/flood-lua/bench-conf/mo/*; do
	sed -i 's/"back2norm-time": 10/"back2norm-time": 10, "action-lua": "slow", "back2norm-lua": "slow"/' "$o/mo.conf"
	echo 'function slow(ev) xe.run({"sleep", "1"}, 5) end' > "$o/mo.lua"
done
for r in $(seq "$rounds"); do
	for v in base flood flood-lua; do
		rm -rf "/dev/shm/xe-flood-$v" && mkdir -p "/dev/shm/xe-flood-$v"
		out=$("$t/$v/collector-bench.sh" "$v" "$bin" "$n" "$rate")
		echo "$out" | head -1
		w=$(echo "$out" | sed -n 's/^workdir //p')
		{ grep -o "alert events.*" "$w/stderr.log" || echo "(no summary)"; } | tail -1 | sed "s/^/    $v: /"
		rm -rf "$w"
	done
done
rm -rf "$t" /dev/shm/xe-flood-*
