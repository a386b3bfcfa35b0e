#!/usr/bin/env bash
# Writes one Telegram message file for xe-tele-bot.py; on-start.sh and on-stop.sh call it.
# usage: tg-message.sh start|stop OBJECT MAVG LIMIT NOTIFICATION-FILE KEY1 [KEY2 ...] VALUE THRESHOLD
# The message shows the first key as IP and the second as proto (the classic
# ["src host", "proto", "octets"] moving average); VALUE and THRESHOLD (the last two arguments,
# bytes per second) are shown in bits per second. The message says whether the limit is an
# overlimit or an underlimit: the collector tells scripts in XENOEYE_KIND. Without it (the
# script run by hand or by another collector), a start's rate tells (an underlimit starts
# below its threshold), and the start of an underlimit leaves NAME.under for its end's
# message.
# An underlimit's start while exporters are silent (XENOEYE_SILENT_EXPORTERS, from the
# collector) names them at the end of the message: the drop may be theirs.
#   TELEMSG_DIR   where message files go (default /var/lib/xenoeye/telemsg/)
set -eu
kind=$1
shift
dir=${TELEMSG_DIR:-/var/lib/xenoeye/telemsg/}
args=("$@")
n=$#
name=$(basename "${args[3]}")
ip=${args[4]}
proto=${args[5]}
[ "$n" -ge 8 ] || proto="-"
value=${args[n-2]}
threshold=${args[n-1]}
under="${dir%/}/${name}.under"
limit=Overlimit
silent=""
if [ "$kind" = start ]; then
	if [ "${XENOEYE_KIND:-}" = underlimit ] || { [ -z "${XENOEYE_KIND:-}" ] && [ "$value" -lt "$threshold" ]; }; then
		limit=Underlimit
		: > "$under"
	else
		rm -f "$under"
	fi
	ext=.n what="$limit detected" echo_prefix=""
	if [ "$limit" = Underlimit ] && [ -n "${XENOEYE_SILENT_EXPORTERS:-}" ]; then
		silent=", exporters silent: <b>$XENOEYE_SILENT_EXPORTERS</b>"
	fi
else
	if [ "${XENOEYE_KIND:-}" = underlimit ] || { [ -z "${XENOEYE_KIND:-}" ] && [ -e "$under" ]; }; then
		limit=Underlimit
	fi
	rm -f "$under"
	ext=.s what="$limit is over" echo_prefix="BACK-"
fi
out="${dir%/}/${name}${ext}"
now=$(date '+%F %T.%3N')
printf "%s at '<b>%s</b>', object '<b>%s</b>', IP <b>%s</b>, proto <b>%s</b>, BPS <b>%s</b>, limit %s BPS%s" \
	"$what" "$now" "${args[0]}" "$ip" "$proto" "$((value * 8))" "$((threshold * 8))" "$silent" > "$out.tmp"
mv "$out.tmp" "$out"
echo "$echo_prefix$out"
