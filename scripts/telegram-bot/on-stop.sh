#!/usr/bin/env bash
# Back-to-normal script: leaves a Telegram message file ("*.s") for xe-tele-bot.py.
# xenoeye runs it as: on-stop.sh OBJECT MAVG LIMIT NOTIFICATION-FILE KEY1 KEY2 VALUE THRESHOLD
# (see tg-message.sh for the message and TELEMSG_DIR).
exec "$(dirname "$0")/tg-message.sh" stop "$@"
