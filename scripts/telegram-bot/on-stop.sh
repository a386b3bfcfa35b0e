#!/usr/bin/env bash
# Back-to-normal script: leaves a Telegram message file for xe-tele-bot.py.
# xenoeye runs it as: on-stop.sh OBJECT MAVG LIMIT NOTIFICATION-FILE KEY1 KEY2 VALUE THRESHOLD
# (keys and values as for on-start.sh).
#   TELEMSG_DIR   where message files go (default /var/lib/xenoeye/telemsg/)
set -eu
dir=${TELEMSG_DIR:-/var/lib/xenoeye/telemsg/}
args=("$@")
n=$#
name=$(basename "${args[3]}")
ip=${args[4]}
proto=${args[5]}
[ "$n" -ge 8 ] || proto="-"
value=${args[n-2]}
threshold=${args[n-1]}
out="${dir%/}/${name}.s"
now=$(date '+%F %T.%3N')
printf "Overlimit is over at '<b>%s</b>', object '<b>%s</b>', IP <b>%s</b>, proto <b>%s</b>, BPS <b>%s</b>, limit %s BPS" \
	"$now" "${args[0]}" "$ip" "$proto" "$((value * 8))" "$((threshold * 8))" > "$out.stmp"
mv "$out.stmp" "$out"
echo "BACK-$out"
