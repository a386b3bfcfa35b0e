#!/usr/bin/env bash
# Charts from the collector's tables in PostgreSQL, drawn by gnuplot into a PNG (the guide's
# "Plotting with gnuplot").
#
# usage: mkchart-gnuplot.sh CHART TABLE OUT.png [FROM [TO]]
#   traffic  TABLE with time, octets (e.g. ingress_all): bits per second over time
#   proto    TABLE with time, proto, octets (e.g. ingress_proto): bits per second per protocol
#            (names from the iana_protocols table when it exists, see scripts/iana-protocols.sh)
#   ip       TABLE with time, octets and src_host or dst_host (e.g. ingress_octets_by_src):
#            the TOP addresses by bytes over the period, the rest as "Other"
# FROM, TO: timestamps (default: the last day).
# Environment: XENOEYE_DB (connection string, as for fill-db.sh), WINDOW (seconds per row;
#              default: found from the table's times), TOP (addresses for "ip", 20),
#              SIZE (PNG size, 1000,400).
set -euo pipefail
chart=$1 table=$2 out=$3
from=${4:-$(date -u -d '1 day ago' '+%F %T+00')}
to=${5:-$(date -u '+%F %T+00')}
XENOEYE_DB=${XENOEYE_DB:-postgresql://xenoeye:password@localhost/xenoeyedb}
TOP=${TOP:-20}
SIZE=${SIZE:-1000,400}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case "$table" in *[!A-Za-z0-9_]*) echo "mkchart: bad table name $table" >&2; exit 2;; esac
sql() { psql -X -q -v ON_ERROR_STOP=1 "$XENOEYE_DB" "$@"; }
range="time >= '$from' and time < '$to'"
# The window length: the smallest step between the table's times (30 s when there is one).
WINDOW=${WINDOW:-$(sql -At -c "select coalesce(min(step), 30)::int from (select extract(epoch from time - lag(time) over (order by time)) as step
	from (select distinct time from $table where $range) t) s where step > 0")}
bps="sum(octets)*8/$WINDOW"

case "$chart" in
traffic)
	sql -At -F ',' -c "select to_char(time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), $bps from $table where $range group by time order by time" > "$tmp/data.csv"
	plot="plot '$tmp/data.csv' using 1:2 notitle with boxes"
	sep=','
	;;
proto|ip)
	if [ "$chart" = proto ]; then
		names=$(sql -At -c "select to_regclass('iana_protocols') is not null")
		if [ "$names" = t ]; then
			name="coalesce(p.name, t.proto::text)"
			join="left join iana_protocols p on p.num = t.proto"
		else
			name="t.proto::text" join=""
		fi
		q="select to_char(t.time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as time, $name as name, sum(t.octets)*8/$WINDOW as bps
		   from $table t $join where t.$range group by 1, 2 order by 1"
	else
		field=$(sql -At -c "select column_name from information_schema.columns where table_name = '$table' and column_name in ('src_host','dst_host') limit 1")
		[ -n "$field" ] || { echo "mkchart: $table has no src_host or dst_host" >&2; exit 2; }
		q="with top as (select host($field) as ip from $table where $range and $field is not null
		                group by 1 order by sum(octets) desc limit $TOP)
		   select to_char(time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as time,
		          case when host($field) in (select ip from top) then host($field) else 'Other' end as name,
		          sum(octets)*8/$WINDOW as bps
		   from $table where $range group by 1, 2 order by 1"
	fi
	echo "$q \\crosstabview time name bps" | sql -A -F '|' -P footer=off > "$tmp/data.csv"
	cols=$(head -1 "$tmp/data.csv" | awk -F '|' '{print NF}')
	plot="plot for [i=2:$cols] '$tmp/data.csv' using 1:i with boxes"
	sep='|'
	;;
*)
	echo "usage: mkchart-gnuplot.sh traffic|proto|ip TABLE OUT.png [FROM [TO]]" >&2
	exit 2
	;;
esac

[ -s "$tmp/data.csv" ] || { echo "mkchart: no rows in $table between $from and $to" >&2; exit 1; }
gnuplot <<GP
set terminal png size $SIZE
set output '$out'
set xdata time
set timefmt '%Y-%m-%d %H:%M:%S'
set format x '%H:%M'
set xtics rotate
set datafile separator '$sep'
set key autotitle columnhead outside
set format y '%.0s%cbit/s'
set style fill solid
set yrange [0:*]
set boxwidth $((WINDOW * 8 / 10))
$plot
GP
