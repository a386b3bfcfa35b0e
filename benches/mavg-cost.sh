#!/usr/bin/env bash
# What moving averages cost end to end: the load test (collector-bench.sh) on the standard
# bench-conf and variants of its "mavg" arrays, run alternately, with medians and ratios:
#   bare        no window and no moving average: the fixed cost of a flow (receive, decode,
#               filter), for telling it from the per-table cost (not run unless named)
#   none        no moving average (the fixed windows alone)
#   one         bench-conf as shipped: one per object (bytes per address, with a threshold)
#   proto       plus a second per object: packets per protocol (three keys), with a threshold
#   host        plus a second: packets per address (the first's keys), with a threshold
#   host-proto  plus a second: packets per address and protocol, with a threshold
# usage: benches/mavg-cost.sh BENCH_DIR BIN[,BIN...] [ROUNDS] [PACKETS] [RATE_PPS]
#   BENCH_DIR: the directory holding collector-bench.sh, nfgen.c and bench-conf/
#   BIN: the collector; several, comma-separated, are run alternately in the same rounds
#   (an A/B of two builds), each row then named VARIANT@BIN-FILE-NAME.
#   VARIANTS (environment): the variants to run, "one" among them (default: all five).
#   REPLAY=N (environment): instead of the load test over UDP, each round replays (--read-pcap)
#   the load generator's 4,096 datagrams repeated N times (N x 122,880 flows), timed by the
#   CPU the collector used: no kernel receive path and no sender beside it, so the flow path
#   alone and steadier (A/B of a change to it: 12 rounds of REPLAY=40 take about two minutes).
#   CALLGRIND=N (environment): no timing at all. Each variant and binary replays those datagrams
#   once and N times under callgrind, and the difference gives the instructions per flow in the
#   steady state (every key known, the tables grown): the same count on every run, whatever
#   else the machine does. Wall time here varies by 15-40% between runs; this does not. It
#   leaves out what instructions do not show (cache misses), so it bounds the cost from below.
#   N=4 takes under a minute per variant and binary (valgrind needed). CALLGRIND_KEEP=DIR keeps
#   callgrind's files there (VARIANT@BIN.once.out, .many.out) for callgrind_annotate.
# Never run it beside another benchmark: the machine's noise is ±15% between runs; only the
# ratios within one run mean something.
set -euo pipefail
src=$1 bins=$2 rounds=${3:-3} n=${4:-900000} rate=${5:-66667}
variants=${VARIANTS:-none one proto host host-proto} # VARIANTS="one host": only those ("one" is the base)
t=$(mktemp -d /tmp/xe-mavg-cost.XXXX)
trap 'rm -rf "$t"' EXIT
second() { # the second mavg element, keyed by the JSON field list $1
	echo ", { \"name\": \"pps\", \"time\": 5, \"fields\": [$1, \"packets\"], \"overlimit\": [ { \"name\": \"level1\", \"default\": [1000000000], \"back2norm-time\": 10 } ] }"
}
# Empties mo.conf $2 from its list $1 to the end: from "mavg", no moving average; from "fwm"
# (which comes before it), no window and no moving average.
empty_from() {
	python3 - "$2" "$1" <<'PY'
import re, sys
p, key = sys.argv[1:]
s = open(p).read()
empty = {'mavg': '"mavg": []', 'fwm': '"fwm": [], "mavg": []'}[key]
s2 = re.sub(r'"%s": \[.*\]\s*\}\s*$' % key, empty + '\n}\n', s, flags=re.S)
assert s2 != s
open(p, 'w').write(s2)
PY
}
for v in $variants; do
	cp -r "$src" "$t/$v"
	for o in ingress egress; do
		conf="$t/$v/bench-conf/mo/$o/mo.conf"
		host=$([ $o = ingress ] && echo "dst host" || echo "src host")
		# The shipped mavg element ends with "} ] }" on its own line: the second goes after it.
		case $v in
			none) empty_from mavg "$conf" ;;
			bare) empty_from fwm "$conf" ;;
			one) ;;
			proto) sed -i "s/\(back2norm-time\": 10 } \] }\)$/\1$(second '"proto"')/" "$conf" ;;
			host) sed -i "s/\(back2norm-time\": 10 } \] }\)$/\1$(second "\"$host\"")/" "$conf" ;;
			host-proto) sed -i "s/\(back2norm-time\": 10 } \] }\)$/\1$(second "\"$host\", \"proto\"")/" "$conf" ;;
		esac
	done
done
if [ -n "${DRY:-}" ]; then # DRY=1: show what each variant's objects average, run nothing
	for v in $variants; do echo "$v:"; sed -s -n '/"mavg"/,$p' "$t/$v"/bench-conf/mo/*/mo.conf | grep -o '"mavg": \[\]\|"fields": \[[^]]*\]' | sed 's/^/  /'; done
	exit 0
fi
# Writes the load generator's datagrams (captured in $t/nfgen.bin) $1 times over as the pcap $2.
replay_pcap() {
	python3 - "$t/nfgen.bin" "$2" "$1" <<'PY'
import struct, sys
data, out, times = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'wb'), int(sys.argv[3])
grams, pos = [], 0
while pos < len(data):
    n = struct.unpack('>H', data[pos:pos + 2])[0]
    grams.append(data[pos + 2:pos + 2 + n])
    pos += 2 + n
def checksum(h):
    s = sum(struct.unpack('!10H', h))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
out.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))  # Ethernet frames
for i in range(times * len(grams)):
    g = grams[i % len(grams)]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + len(g), i & 0xffff, 0, 64, 17, 0, bytes([127, 0, 0, 2]), bytes([127, 0, 0, 1]))
    frame = bytes(12) + b'\x08\x00' + ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:] + struct.pack('!HHHH', 40000, 2055, 8 + len(g), 0) + g
    us = 1_795_755_180_000_000 + i * 15  # 66,667 datagrams per second
    out.write(struct.pack('<IIII', us // 10**6, us % 10**6, len(frame), len(frame)) + frame)
PY
}
# A work directory with variant directory $1's configuration, for a replay; prints its path.
replay_workdir() {
	local w
	w=$(mktemp -d /tmp/xebench-replay.XXXX)
	cp -r "$1/bench-conf/mo" "$1/bench-conf/iplists" "$1/bench-conf/devices.conf" "$w/"
	mkdir -p "$w/exp" "$w/notifications"
	sed -e "s#@W@#$w#g" -e "s#@PORT@#2055#g" "$1/bench-conf/xenoeye.conf.in" > "$w/xenoeye.conf"
	echo "$w"
}
if [ -n "${REPLAY:-}${CALLGRIND:-}" ]; then
	"$(dirname "$0")/capture-nfgen.sh" "$src/nfgen.c" "$t/nfgen.bin" 4096 >/dev/null
fi
if [ -n "${REPLAY:-}" ]; then
	replay_pcap "$REPLAY" "$t/replay.pcap"
fi
if [ -n "${CALLGRIND:-}" ]; then
	command -v valgrind >/dev/null || { echo "CALLGRIND needs valgrind" >&2; exit 2; }
	[ "$CALLGRIND" -ge 2 ] || { echo "CALLGRIND: at least 2 (the steady state is N passes minus the first)" >&2; exit 2; }
	replay_pcap 1 "$t/once.pcap"
	replay_pcap "$CALLGRIND" "$t/many.pcap"
	IFS=, read -r -a binlist <<<"$bins"
	# Instructions of binary $1 on variant directory $2 replaying $3: callgrind's total.
	instructions() {
		local w
		w=$(replay_workdir "$2")
		valgrind --tool=callgrind --callgrind-out-file="${4:-/dev/null}" "$1" -c "$w/xenoeye.conf" --read-pcap "$3" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
		rm -rf "$w"
	}
	for v in $variants; do
		for b in "${binlist[@]}"; do
			keep=${CALLGRIND_KEEP:+$CALLGRIND_KEEP/$v@$(basename "$b")}
			instructions "$b" "$t/$v" "$t/once.pcap" ${keep:+"$keep.once.out"} > "$t/once.n" &
			instructions "$b" "$t/$v" "$t/many.pcap" ${keep:+"$keep.many.out"} > "$t/many.n"
			wait
			echo "$v@$(basename "$b") $(cat "$t/once.n") $(cat "$t/many.n")" | tee -a "$t/counts.txt"
		done
	done
	python3 - "$t/counts.txt" "$CALLGRIND" <<'PY'
import sys
flows = (int(sys.argv[2]) - 1) * 4096 * 30  # the passes after the first, 30 flows a datagram
per_flow = {}
for line in open(sys.argv[1]):
    name, once, many = line.split()
    per_flow[name] = (int(many) - int(once)) / flows
# "vs one": flows per instruction relative to "one" of the same binary, as the wall-time
# figures (a variant that costs more per flow is below 1).
print(f"{'variant':<28} {'instructions per flow':>22}  vs one")
for name, x in per_flow.items():
    one = per_flow.get('one' + name[name.find('@'):])
    print(f"{name:<28} {x:>22,.1f}  {one / x if one and x else 0:6.3f}")
PY
	exit 0
fi
# One round of variant directory $1 with collector $2, named $3: a line as collector-bench.sh
# prints it (name, CPU, flows per CPU-second, loss).
round() {
	if [ -z "${REPLAY:-}" ]; then
		"$1/collector-bench.sh" "$3" "$(realpath "$2")" "$n" "$rate"
		return
	fi
	local w
	w=$(replay_workdir "$1")
	python3 - "$3" "$2" "$w/xenoeye.conf" "$t/replay.pcap" "$((REPLAY * 4096 * 30))" <<'PY'
import re, resource, subprocess, sys
name, binary, conf, pcap, sent = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
run = subprocess.run([binary, '-c', conf, '--read-pcap', pcap], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
m = re.search(r'flows (\d+),', run.stderr)
got = int(m.group(1)) if m and run.returncode == 0 else 0
print(f"{name}: replay; cpu {cpu:.2f} s; {int(got / cpu) if cpu else 0:,} flows per cpu-second; flows counted {got:,}/{sent:,} (loss {100.0 * (1 - got / sent):.2f}%)")
PY
	echo "workdir $w"
}
out="$t/results.txt"
IFS=, read -r -a binlist <<<"$bins"
names=""
for r in $(seq "$rounds"); do
	for v in $variants; do
		for b in "${binlist[@]}"; do
			name=$v
			[ ${#binlist[@]} -gt 1 ] && name=$v@$(basename "$b")
			[ "$r" = 1 ] && names="$names $name"
			res=$(round "$t/$v" "$b" "$name")
			echo "${res%%$'\n'*}" | tee -a "$out"
			rm -rf "$(echo "$res" | sed -n 's/^workdir //p')"
		done
	done
done
python3 - "$out" $names <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\S+): .*?; ([\d,]+) flows per cpu-second.*loss ([\d.]+)%', line)
    if m:
        runs.setdefault(m.group(1), []).append(int(m.group(2).replace(',', '')))
med = {v: statistics.median(x) for v, x in runs.items()}
# "vs one": the ratio of the medians; "by round": the median of each round's ratio to "one"
# of the same binary (the two ran minutes apart at most, so a slow spell of the machine
# touches both; steadier when the rounds drift).
print(f"{'variant':<20} {'median flows/cpu-s':>20}  vs one  by round   runs")
for v in sys.argv[2:]:
    if v in med:
        base = 'one' + v[v.find('@'):] if '@' in v else 'one'
        by_round = statistics.median(a / b for a, b in zip(runs[v], runs[base]))
        print(f"{v:<20} {med[v]:>20,.0f}  {med[v] / med[base]:6.2f}  {by_round:8.2f}   {', '.join(f'{x:,}' for x in runs[v])}")
PY
