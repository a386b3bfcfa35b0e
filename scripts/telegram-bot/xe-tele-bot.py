#!/usr/bin/env python3
"""xenoeye Telegram bot: sends the message files that on-start.sh / on-stop.sh leave.

Every POLL_INTERVAL seconds it looks at TELEMSG_DIR:
  NAME.n  a new anomaly: a red message to every chat; the message ids are kept in NAME.-
  NAME.s  the anomaly is over: a green reply to each red message; if NAME.n was never sent
          (the anomaly started and ended between two polls), one yellow message with both.
It also answers /id (the chat id to put in CHATS) and /help.

Standard library only. Settings come from the environment:
  XE_TG_TOKEN      bot token (required)
  XE_TG_CHATS      comma-separated chat ids to notify
  XE_TG_API        Bot API base URL (default https://api.telegram.org)
  TELEMSG_DIR      message directory (default /var/lib/xenoeye/telemsg/)
  XE_TG_POLL       poll interval, seconds (default 10)
Run with --once to process the directory once and exit (tests, cron).
"""
import json
import logging
import os
import sys
import time
import urllib.request

TOKEN = os.environ.get("XE_TG_TOKEN", "")
CHATS = [c.strip() for c in os.environ.get("XE_TG_CHATS", "").split(",") if c.strip()]
API = os.environ.get("XE_TG_API", "https://api.telegram.org").rstrip("/")
MSGS_DIR = os.environ.get("TELEMSG_DIR", "/var/lib/xenoeye/telemsg/")
POLL_INTERVAL = float(os.environ.get("XE_TG_POLL", "10"))

RED, GREEN, YELLOW = "\U0001F534 ", "\U0001F7E2 ", "\U0001F7E1 "


def call(method, **params):
    """Calls a Bot API method; returns its result."""
    req = urllib.request.Request(
        "%s/bot%s/%s" % (API, TOKEN, method),
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read().decode())
    if not body.get("ok"):
        raise RuntimeError("%s: %s" % (method, body))
    return body.get("result")


def send(chat_id, text, reply_to=None):
    params = {"chat_id": chat_id, "text": text, "parse_mode": "HTML"}
    if reply_to is not None:
        params["reply_to_message_id"] = int(reply_to)
    return call("sendMessage", **params)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def check_events():
    """Sends what the message directory holds; each file is removed once sent. Ends (.s) go
    first, so an anomaly that started and ended since the last poll is one yellow message."""
    names = sorted(os.listdir(MSGS_DIR), key=lambda n: (not n.endswith(".s"), n))
    for filename in names:
        full = os.path.join(MSGS_DIR, filename)
        base, ext = os.path.splitext(full)
        if not os.path.isfile(full):
            continue
        if ext == ".n":
            sent = []
            for chat in CHATS:
                msg = send(chat, RED + read(full))
                sent.append("%s:%s\n" % (chat, msg["message_id"]))
            with open(base + ".-tmp", "w") as f:
                f.writelines(sent)
            os.rename(base + ".-tmp", base + ".-")
            os.remove(full)
        elif ext == ".s":
            if os.path.isfile(base + ".n"):
                # Started and ended between two polls: one yellow message with both.
                text = YELLOW + read(base + ".n") + "\n" + read(full)
                for chat in CHATS:
                    send(chat, text)
                os.remove(base + ".n")
            elif os.path.isfile(base + ".-"):
                for line in read(base + ".-").splitlines():
                    chat, msg_id = line.split(":", 1)
                    send(chat, GREEN + read(full), reply_to=msg_id)
                os.remove(base + ".-")
            else:
                for chat in CHATS:
                    send(chat, GREEN + read(full))
            os.remove(full)


def answer_commands(offset):
    """Answers /id and /help; returns the next update offset."""
    for upd in call("getUpdates", offset=offset, timeout=0):
        offset = max(offset, upd["update_id"] + 1)
        msg = upd.get("message") or {}
        chat = (msg.get("chat") or {}).get("id")
        text = msg.get("text", "")
        if chat is None:
            continue
        if text.startswith("/id"):
            send(chat, "Chat id: %s" % chat)
        elif text.startswith("/help") or text.startswith("/start"):
            send(chat, "Hi! I'm the xenoeye bot. /id tells the id of this chat.")
        else:
            send(chat, "Only /id or /help commands allowed")
    return offset


def main():
    logging.basicConfig(level=logging.INFO, format="xe-tele-bot: %(message)s")
    if not TOKEN:
        logging.error("XE_TG_TOKEN is not set")
        return 2
    once = "--once" in sys.argv[1:]
    offset = 0
    while True:
        try:
            check_events()
            offset = answer_commands(offset)
        except Exception as e:  # keep polling through network errors
            logging.error("%s", e)
            if once:
                return 1
        if once:
            return 0
        time.sleep(POLL_INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
