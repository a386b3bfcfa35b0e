#!/usr/bin/env bash
# Quick start: builds xenoeye if needed and runs it on the bundled config (conf/xenoeye.conf),
# listening for NetFlow/IPFIX on UDP port 2055, keeping its state under ./run. No root needed.
# Extra arguments go to xenoeye (e.g. --read-pcap FILE, -v).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p run/exp run/notifications
exec target/release/xenoeye -c conf/xenoeye.conf "$@"
