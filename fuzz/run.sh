#!/usr/bin/env bash
# Fuzzes one target for a while: installs cargo-fuzz when missing, seeds the decode target's
# corpus from the real captures in DATA_DIR, and keeps the corpus in fuzz/corpus/TARGET
# between runs (crashes land in fuzz/artifacts/TARGET, with the command to reproduce them).
# usage: fuzz/run.sh TARGET [SECONDS] [DATA_DIR]
#   TARGET: decode (datagrams), filter (filter text), mo_conf (an object's mo.conf,
#   seeded with the bundled and the tests' ones) or limits (a limits file); SECONDS default 600;
#   DATA_DIR: the captures (default tests/data: softflowd's, logstash's and telegraf's).
#   FUZZ_DEBUG=1: build with debug assertions (overflow and unchecked-index checks).
# The machine's one toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# coverage flags; no sanitizer is needed for the safe code (and ASan needs nightly).
set -euo pipefail
cd "$(dirname "$0")"
target=$1 secs=${2:-600} data=${3:-../tests/data}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p "corpus/$target"
seeds=()
if [ "$target" = decode ]; then
	cargo build --release --bin seed --target-dir target/seed
	captures=$(find "$data" -name '*.pcap' | sort)
	# shellcheck disable=SC2086
	target/seed/release/seed target/seeds $captures
	seeds=(target/seeds)
elif [ "$target" = mo_conf ]; then
	mkdir -p target/seeds-mo
	find ../conf ../tests -name mo.conf | while read -r f; do cp "$f" "target/seeds-mo/$(echo "$f" | tr / _)"; done
	seeds=(target/seeds-mo)
elif [ "$target" = limits ]; then
	mkdir -p target/seeds-limits
	printf '10.0.0.1, 2001:db8::1, 00:0c:29:70:86:09, 6, 100, 2000 # a host\n# comment\n10.0.0.2,::,00:00:00:00:00:01,17,inf,0\n' > target/seeds-limits/one
	seeds=(target/seeds-limits)
fi
debug=()
[ -n "${FUZZ_DEBUG:-}" ] && debug=(--debug-assertions)
RUSTC_BOOTSTRAP=1 cargo fuzz run "${debug[@]}" -O --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
	-max_total_time="$secs" -max_len=8192
