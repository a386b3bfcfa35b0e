#!/usr/bin/env bash
# Loads the collector's export files into PostgreSQL, one psql call per file, as the original
# guide describes. A file that loads is deleted; one that fails is moved to FAIL_DIR. Each file
# is loaded in one transaction (all rows or none), so a failed file can be loaded again later
# without duplicating rows.
#
# Run it in a loop (`while true; do ./fill-db.sh; sleep 10; done`), from cron, from the
# db-export key of xenoeye.conf, or as the xenoeye-export service.
#
#   EXP_DIR       export directory        (default /var/lib/xenoeye/exp)
#   FAIL_DIR      where failed files go   (default /var/lib/xenoeye/expfailed)
#   XENOEYE_DB    connection string       (default postgresql://xenoeye:password@localhost/xenoeyedb)
set -u
EXP_DIR=${EXP_DIR:-/var/lib/xenoeye/exp}
FAIL_DIR=${FAIL_DIR:-/var/lib/xenoeye/expfailed}
XENOEYE_DB=${XENOEYE_DB:-postgresql://xenoeye:password@localhost/xenoeyedb}

mkdir -p "$FAIL_DIR"
status=0
for sqlscript in "$EXP_DIR"/*.sql; do
	[ -e "$sqlscript" ] || continue   # no files
	if psql -q -X -v ON_ERROR_STOP=1 --single-transaction "$XENOEYE_DB" -f "$sqlscript" >/dev/null; then
		rm -f "$sqlscript"
	else
		echo "fill-db: $sqlscript failed, moved to $FAIL_DIR" >&2
		mv "$sqlscript" "$FAIL_DIR"/
		status=1
	fi
done
exit $status
