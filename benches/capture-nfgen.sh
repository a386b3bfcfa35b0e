#!/usr/bin/env bash
# Captures the load generator's datagrams into the format of benches/data (16-bit big-endian
# length, payload), for the pipeline benchmark's XE_PIPELINE_DATA: the shipped capture holds
# 256 distinct datagrams, whose keys all stay in the caches; the load test cycles through
# 4096, whose key sets (tens of thousands of addresses per object) do not.
# usage: benches/capture-nfgen.sh NFGEN_C OUT [DISTINCT]
#   e.g. benches/capture-nfgen.sh ../shared/tools/bench/nfgen.c /tmp/nfgen-v9-4096.bin 4096
#   then XE_PIPELINE_DATA=/tmp/nfgen-v9-4096.bin cargo bench --bench pipeline
set -euo pipefail
src=$1 out=$2 k=${3:-4096}
gen=$(mktemp /tmp/xe-nfgen.XXXX)
trap 'rm -f "$gen"' EXIT
gcc -O2 -o "$gen" "$src"
python3 - "$gen" "$out" "$k" <<'PY'
import socket, struct, subprocess, sys
gen, out, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
# Read while the generator sends (slowly: 4000 datagrams per second), so that none is lost.
sender = subprocess.Popen([gen, '-p', str(s.getsockname()[1]), '-n', str(k), '-k', str(k), '-r', '4000', '-v', '9'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
s.settimeout(2.0)
got = []
try:
    while True:
        got.append(s.recv(65535))
except socket.timeout:
    pass
if sender.wait() != 0 or len(got) != k:
    sys.exit(f"capture failed: {len(got)} of {k} datagrams")
with open(out, 'wb') as f:
    for d in got:
        f.write(struct.pack('>H', len(d)) + d)
print(f"{len(got)} datagrams, {sum(len(d) for d in got)} bytes -> {out}")
PY
