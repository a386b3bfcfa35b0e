#!/usr/bin/env bash
# Creates (or refreshes) the iana_protocols table (num, name, descr) that the chart scripts and
# the Grafana dashboards join to show protocol names. The names come from the system's
# /etc/protocols (Debian's netbase, kept up to date from IANA's registry), so nothing is
# downloaded. XENOEYE_DB: connection string (as for fill-db.sh).
set -euo pipefail
XENOEYE_DB=${XENOEYE_DB:-postgresql://xenoeye:password@localhost/xenoeyedb}
PROTOCOLS=${PROTOCOLS:-/etc/protocols}
{
	echo "BEGIN;"
	echo "CREATE TABLE IF NOT EXISTS iana_protocols (num int PRIMARY KEY, name text, descr text);"
	echo "TRUNCATE iana_protocols;"
	echo "COPY iana_protocols (num, name, descr) FROM STDIN WITH (FORMAT csv);"
	# name number ALIAS # comment  ->  number,ALIAS,comment (first name per number wins)
	awk '!/^#/ && NF >= 3 && !seen[$2]++ {
		descr = ""; i = index($0, "#"); if (i) descr = substr($0, i + 1)
		gsub(/^[ \t]+|[ \t]+$/, "", descr); gsub(/"/, "\"\"", descr)
		printf "%s,\"%s\",\"%s\"\n", $2, $3, descr
	}' "$PROTOCOLS"
	echo '\.'
	echo "COMMIT;"
} | psql -X -q -v ON_ERROR_STOP=1 "$XENOEYE_DB" -f -
