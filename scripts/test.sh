#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against real captures, end-to-end with the
# binary and a real PostgreSQL). Installs what is missing first and starts a private
# PostgreSQL server for the run. One release build serves every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The install tests verify the systemd units with systemd-analyze (Debian package systemd).
# The Telegram bot's tests run python3; the chart tests gnuplot and Debian's matplotlib;
# the live pcap tests (as root) ip from iproute2 for a network namespace of their own; an
# alert test has real exporters (softflowd, pmacct's pmacctd) meter a capture of a flood;
# every capture's decoding is checked against tshark's (Debian package tshark) and its
# flows against nfdump's collector (package nfdump).
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v python3 >/dev/null || need+=(python3)
command -v ip >/dev/null || need+=(iproute2)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v softflowd >/dev/null || need+=(softflowd)
command -v pmacctd >/dev/null || need+=(pmacct)
command -v tshark >/dev/null || need+=(tshark)
command -v nfcapd >/dev/null || need+=(nfdump)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
pgdir=$(mktemp -d /tmp/xe-test-pg.XXXXXX)
trap 'scripts/pg-test-server.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
port=$((40000 + RANDOM % 20000))
XE_TEST_PG_URL=$(scripts/pg-test-server.sh start "$pgdir" "$port")
export XE_TEST_PG_URL
# Lints first (no warnings allowed), when the toolchain has clippy.
if cargo clippy --version >/dev/null 2>&1; then
	cargo clippy --release --locked --all-targets -- -D warnings
else
	echo "test.sh: cargo clippy is not installed; lints skipped" >&2
fi
cargo test --release --locked "$@"
