#!/usr/bin/env bash
# Creates (or refreshes) the iana_protocols table (num, name, descr) that the chart scripts and
# the Grafana dashboards join to show protocol names. The data is IANA's "Assigned Internet
# Protocol Numbers" registry in IANA's own CSV format (protocol-numbers-1.csv), shipped with
# xenoeye in sql/, so nothing is downloaded at run time. To refresh it, save a newer copy from
# https://www.iana.org/assignments/protocol-numbers/protocol-numbers-1.csv and point PROTOCOLS_CSV
# at it. Ranges ("148-252") become one row per number.
# XENOEYE_DB: connection string (as for fill-db.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
XENOEYE_DB=${XENOEYE_DB:-postgresql://xenoeye:password@localhost/xenoeyedb}
PROTOCOLS_CSV=${PROTOCOLS_CSV:-$here/sql/protocol-numbers-1.csv}
[ -r "$PROTOCOLS_CSV" ] || { echo "iana-protocols.sh: cannot read $PROTOCOLS_CSV" >&2; exit 1; }
{
	cat <<'SQL'
BEGIN;
CREATE TABLE IF NOT EXISTS iana_protocols (num int PRIMARY KEY, name text, descr text);
CREATE TEMP TABLE iana_registry (num text, keyword text, protocol text, ipv6_ext text, reference text);
COPY iana_registry FROM STDIN WITH (FORMAT csv, HEADER true);
SQL
	cat "$PROTOCOLS_CSV"
	cat <<'SQL'
\.
TRUNCATE iana_protocols;
INSERT INTO iana_protocols (num, name, descr)
SELECT DISTINCT ON (n) n, NULLIF(btrim(keyword), ''), NULLIF(regexp_replace(btrim(protocol), '\s+', ' ', 'g'), '')
  FROM iana_registry,
       generate_series(split_part(num, '-', 1)::int,
                       COALESCE(NULLIF(split_part(num, '-', 2), ''), split_part(num, '-', 1))::int) AS n
 WHERE num ~ '^[0-9]+(-[0-9]+)?$'
 ORDER BY n;
COMMIT;
SQL
} | psql -X -q -v ON_ERROR_STOP=1 "$XENOEYE_DB" -f -
