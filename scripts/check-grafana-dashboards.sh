#!/usr/bin/env bash
# Type-checks Grafana dashboards against Grafana's own published schema (the @grafana/schema
# package, pinned in tests/grafana/package-lock.json): unknown keys, values of the wrong type,
# enum values Grafana does not know, in the dashboard, its panels, and each panel's options and
# field config. No Grafana server is needed.
# usage: scripts/check-grafana-dashboards.sh [DASHBOARD.json ...]   (default: the shipped ones)
# Installs Node.js and npm from Debian when missing; the packages go under target/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${XE_GRAFANA_CHECK_DIR:-$root/target/grafana-check}
if ! command -v npm >/dev/null; then
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
[ $# -gt 0 ] || set -- "$root"/scripts/grafana/dashboards/*.json
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
mkdir -p "$work"
for f in package.json package-lock.json tsconfig.json gen-check.js; do
	cmp -s "$root/tests/grafana/$f" "$work/$f" || cp "$root/tests/grafana/$f" "$work/$f"
done
cd "$work"
# Reinstall only when the pinned versions changed.
if ! cmp -s package-lock.json node_modules/.package-lock.json.used 2>/dev/null; then
	npm ci --silent --no-audit --no-fund
	cp package-lock.json node_modules/.package-lock.json.used
fi
node gen-check.js "${files[@]}"
npx --no-install tsc -p .
echo "check-grafana-dashboards: ${#files[@]} dashboards match Grafana's schema"
