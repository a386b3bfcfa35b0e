#!/usr/bin/env bash
# Loads every pending export file into PostgreSQL in ONE transaction (faster than one psql per
# file, and all-or-nothing): on success the files are deleted, on failure they are moved to
# FAIL_DIR and nothing is loaded. Same variables as fill-db.sh.
set -u
EXP_DIR=${EXP_DIR:-/var/lib/xenoeye/exp}
FAIL_DIR=${FAIL_DIR:-/var/lib/xenoeye/expfailed}
XENOEYE_DB=${XENOEYE_DB:-postgresql://xenoeye:password@localhost/xenoeyedb}

shopt -s nullglob
files=("$EXP_DIR"/*.sql)
[ ${#files[@]} -gt 0 ] || exit 0
mkdir -p "$FAIL_DIR"
if cat "${files[@]}" | psql -q -X -v ON_ERROR_STOP=1 --single-transaction "$XENOEYE_DB" -f - >/dev/null; then
	rm -f "${files[@]}"
else
	echo "xe-dbexport-pg: loading ${#files[@]} files failed, moved to $FAIL_DIR" >&2
	mv "${files[@]}" "$FAIL_DIR"/
	exit 1
fi
