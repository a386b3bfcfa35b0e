#!/usr/bin/env bash
# What moving averages cost end to end: the load test (collector-bench.sh) on the standard
# bench-conf and variants of its "mavg" arrays, run alternately, with medians and ratios:
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
for v in $variants; do
	cp -r "$src" "$t/$v"
	for o in ingress egress; do
		conf="$t/$v/bench-conf/mo/$o/mo.conf"
		host=$([ $o = ingress ] && echo "dst host" || echo "src host")
		# The shipped mavg element ends with "} ] }" on its own line: the second goes after it.
		case $v in
			none) python3 - "$conf" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s2 = re.sub(r'"mavg": \[.*\]\s*\}\s*$', '"mavg": []\n}\n', s, flags=re.S)
assert s2 != s; open(p, 'w').write(s2)
PY
			;;
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
out="$t/results.txt"
IFS=, read -r -a binlist <<<"$bins"
names=""
for r in $(seq "$rounds"); do
	for v in $variants; do
		for b in "${binlist[@]}"; do
			name=$v
			[ ${#binlist[@]} -gt 1 ] && name=$v@$(basename "$b")
			[ "$r" = 1 ] && names="$names $name"
			res=$("$t/$v/collector-bench.sh" "$name" "$(realpath "$b")" "$n" "$rate")
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
print(f"{'variant':<20} {'median flows/cpu-s':>20}  vs one   runs")
for v in sys.argv[2:]:
    if v in med:
        one = med['one' + v[v.find('@'):]] if '@' in v else med['one']
        print(f"{v:<20} {med[v]:>20,.0f}  {med[v] / one:6.2f}   {', '.join(f'{x:,}' for x in runs[v])}")
PY
