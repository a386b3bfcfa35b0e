#!/usr/bin/env bash
# Fuzzes one target for a while: installs cargo-fuzz when missing, seeds the decode target's
# corpus from the real captures in DATA_DIR, and keeps the corpus in fuzz/corpus/TARGET
# between runs (crashes land in fuzz/artifacts/TARGET, with the command to reproduce them).
# usage: fuzz/run.sh TARGET [SECONDS] [DATA_DIR]
#   TARGET: decode (datagrams), filter (filter text), mo_conf (an object's mo.conf,
#   seeded with the bundled and the tests' ones), limits (a limits file), config
#   (xenoeye.conf and devices.conf), templates (a templates file, then datagrams), take_up
#   (a notification file read back at start) or mo_lua (an object's mo.lua); SECONDS
#   default 600;
#   DATA_DIR: the captures (default tests/data: softflowd's, logstash's and telegraf's).
#   FUZZ_DEBUG=1: build with debug assertions (overflow and unchecked-index checks).
# The machine's one toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# coverage flags; no sanitizer is needed for the safe code (and ASan needs nightly).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=$1 secs=${2:-600} data=$(realpath "${3:-$here/../tests/data}") # DATA_DIR from where it was called
cd "$here"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p "corpus/$target"
seeds=()
if [ "$target" = decode ] || [ "$target" = templates ]; then
	# From the real captures: their datagrams (decode), or the templates file each leaves
	# followed by its first datagrams (templates).
	cargo build --release --bin seed --target-dir target/seed
	how=()
	[ "$target" = templates ] && how=(--templates)
	# shellcheck disable=SC2046
	target/seed/release/seed "${how[@]}" "target/seeds-$target" $(find "$data" -name '*.pcap' | sort)
	seeds=("target/seeds-$target")
elif [ "$target" = mo_conf ]; then
	mkdir -p target/seeds-mo
	find ../conf ../tests -name mo.conf | while read -r f; do cp "$f" "target/seeds-mo/$(echo "$f" | tr / _)"; done
	seeds=(target/seeds-mo)
elif [ "$target" = config ]; then
	mkdir -p target/seeds-config
	find ../conf ../tests -name xenoeye.conf | while read -r f; do
		devices=$(dirname "$f")/devices.conf
		{ cat "$f"; if [ -f "$devices" ]; then printf '\0'; cat "$devices"; fi; } > "target/seeds-config/$(echo "$f" | tr / _)"
	done
	seeds=(target/seeds-config)
elif [ "$target" = mo_lua ]; then
	mkdir -p target/seeds-mo-lua
	# The README's example of children made from a customers file, with a moving average.
	printf 'local children = {}\nfor _, line in ipairs(xe.read_lines("customers")) do\n  local name, net = line:match("^(%%w+)%%s+(%%S+)$")\n  if name then\n    children[name] = { filter = "dst net " .. net, fwm = { { name = "all", fields = { "octets" } } } }\n  end\nend\nreturn { filter = "dst net 10.0.0.0/8", fwm = { { name = "all", fields = { "octets" } } }, mavg = { { name = "m", fields = { "dst host", "octets" }, overlimit = { { name = "l", default = { 1000 } } } } }, children = children }\n' > target/seeds-mo-lua/readme
	seeds=(target/seeds-mo-lua)
elif [ "$target" = take_up ]; then
	mkdir -p target/seeds-take-up
	printf '10.0.0.1-2001:db8::1-00:0c:29:70:86:09-6\n10.0.0.1 2001:db8::1 00:0c:29:70:86:09 6 1500 1000\n' > target/seeds-take-up/one
	seeds=(target/seeds-take-up)
elif [ "$target" = limits ]; then
	mkdir -p target/seeds-limits
	printf '10.0.0.1, 2001:db8::1, 00:0c:29:70:86:09, 6, 100, 2000 # a host\n# comment\n10.0.0.2,::,00:00:00:00:00:01,17,inf,0\n' > target/seeds-limits/one
	seeds=(target/seeds-limits)
fi
debug=()
[ -n "${FUZZ_DEBUG:-}" ] && debug=(--debug-assertions)
RUSTC_BOOTSTRAP=1 cargo fuzz run "${debug[@]}" -O --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
	-max_total_time="$secs" -max_len=8192
