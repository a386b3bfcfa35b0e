#!/usr/bin/env bash
# Action script for an overlimit: leaves a Telegram message file for xe-tele-bot.py.
# xenoeye runs it as: on-start.sh OBJECT MAVG LIMIT NOTIFICATION-FILE KEY1 KEY2 VALUE THRESHOLD
# The message shows the first key as IP and the second as proto (the classic
# ["src host", "proto", "octets"] moving average); VALUE and THRESHOLD (the last two arguments,
# bytes per second) are shown in bits per second.
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
out="${dir%/}/${name}.n"
now=$(date '+%F %T.%3N')
printf "Overlimit detected at '<b>%s</b>', object '<b>%s</b>', IP <b>%s</b>, proto <b>%s</b>, BPS <b>%s</b>, limit %s BPS" \
	"$now" "${args[0]}" "$ip" "$proto" "$((value * 8))" "$((threshold * 8))" > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
