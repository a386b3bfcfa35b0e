#!/usr/bin/env bash
# Installs xenoeye (the original's `make install`, plus systemd units):
#   $PREFIX/bin/xenoeye                     the collector (built if needed)
#   /etc/xenoeye/{xenoeye.conf,devices.conf,export.env,telegram.env (mode 0600: a token)}
#                                           never overwritten: an edited file stays, the new
#                                           version is put beside it as FILE.dist
#   /var/lib/xenoeye/{mo,exp,expfailed,iplists,notifications,telemsg}
#   $PREFIX/share/xenoeye/                  fill-db.sh, xe-dbexport-pg.sh, telegram-bot/,
#                                           reports: iana-protocols.sh, mkchart-*, sql/
#                                           (xe_rep.sql, IANA protocol numbers), grafana/,
#                                           examples/ (the guide's objects and IP lists),
#                                           lua/ (the bundled Lua library, lua.lib-dir)
#   /etc/systemd/system/xenoeye.service, xenoeye-export.{service,timer},
#                                           xenoeye-telegram.service (the Telegram bot)
#   the system user "xenoeye" (when installing into / as root)
# Environment: DESTDIR (install root, default empty = /), PREFIX (default /usr/local).
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}

[ -x target/release/xenoeye ] || scripts/setup.sh
bin="$DESTDIR$PREFIX/bin"
share="$DESTDIR$PREFIX/share/xenoeye"
etc="$DESTDIR/etc/xenoeye"
var="$DESTDIR/var/lib/xenoeye"
units="$DESTDIR/etc/systemd/system"

install -d "$bin" "$share" "$share/telegram-bot" "$share/examples" "$etc" "$units" "$DESTDIR$PREFIX/share/doc/xenoeye"
for d in mo exp expfailed iplists notifications telemsg; do install -d "$var/$d"; done
install -m 0755 target/release/xenoeye "$bin/xenoeye"
install -m 0755 scripts/fill-db.sh scripts/xe-dbexport-pg.sh "$share/"
install -m 0755 scripts/iana-protocols.sh scripts/mkchart-* "$share/"
install -m 0644 scripts/xe_charts.py "$share/"
install -d "$share/sql"
install -m 0644 scripts/sql/* "$share/sql/"
cp -r scripts/grafana "$share/"
install -m 0755 scripts/telegram-bot/*.sh scripts/telegram-bot/*.py "$share/telegram-bot/"
cp -r conf/mo conf/iplists "$share/examples/"
install -d "$share/lua"
cp -r lua/. "$share/lua/"
install -m 0644 README.md "$DESTDIR$PREFIX/share/doc/xenoeye/README.md"

# Configuration: install when absent or unchanged; keep an operator's edits.
config() {
	local src=$1 dst=$2 mode=${3:-0644}
	if [ ! -e "$dst" ]; then
		install -m "$mode" "$src" "$dst"
	elif ! cmp -s "$src" "$dst"; then
		install -m "$mode" "$src" "$dst.dist"
		echo "install: kept your $dst; the new version is $dst.dist" >&2
	fi
}
config conf/system/xenoeye.conf "$etc/xenoeye.conf"
config conf/devices.conf "$etc/devices.conf"
config conf/system/export.env "$etc/export.env"
config conf/system/telegram.env "$etc/telegram.env" 0600

for u in xenoeye.service xenoeye-export.service xenoeye-export.timer xenoeye-telegram.service; do
	sed "s#/usr/local#$PREFIX#g" "scripts/systemd/$u" > "$units/$u.tmp"
	mv "$units/$u.tmp" "$units/$u"
	chmod 0644 "$units/$u"
done

if [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ]; then
	id xenoeye >/dev/null 2>&1 || useradd --system --home-dir /var/lib/xenoeye --shell /usr/sbin/nologin xenoeye
	chown -R xenoeye:xenoeye /var/lib/xenoeye
	command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
	echo "install: done. Start with: systemctl enable --now xenoeye (and xenoeye-export.timer)" >&2
fi
