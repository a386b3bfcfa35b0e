#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL server for the tests, installing PostgreSQL from
# Debian when it is missing. Prints the connection string of a role that may create
# databases.
#   scripts/pg-test-server.sh start DIR PORT    -> prints postgresql://xenoeye:password@127.0.0.1:PORT/postgres
#   scripts/pg-test-server.sh stop DIR
set -euo pipefail
cmd=$1 dir=$2 port=${3:-55432}

if [ "$cmd" = stop ]; then
	pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -f "$dir/data/postmaster.pid" ] || exit 0
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null || true
	else
		"$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null || true
	fi
	exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null; then
	echo "pg-test-server: installing postgresql" >&2
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# initdb refuses to run as root: the cluster belongs to the postgres user then.
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
as_owner "$pgbin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_owner "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
	-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null
psql -q -X -h 127.0.0.1 -p "$port" -U postgres -d postgres \
	-c "create role xenoeye login createdb password 'password'" >/dev/null
echo "postgresql://xenoeye:password@127.0.0.1:$port/postgres"
