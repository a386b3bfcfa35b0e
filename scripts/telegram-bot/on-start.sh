#!/usr/bin/env bash
# Action script for an overlimit: leaves a Telegram message file ("*.n") for xe-tele-bot.py.
# xenoeye runs it as: on-start.sh OBJECT MAVG LIMIT NOTIFICATION-FILE KEY1 KEY2 VALUE THRESHOLD
# (see tg-message.sh for the message and TELEMSG_DIR).
exec "$(dirname "$0")/tg-message.sh" start "$@"
