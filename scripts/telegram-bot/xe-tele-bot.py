#!/usr/bin/env python3
"""xenoeye Telegram bot: sends the message files that on-start.sh / on-stop.sh leave.

Every POLL_INTERVAL seconds it looks at TELEMSG_DIR:
  NAME.n  a new anomaly: a red message to every chat; the message ids are kept in NAME.-
  NAME.s  the anomaly is over: a green reply to each red message; if NAME.n was never sent
          (the anomaly started and ended between two polls), one yellow message with both.
In an alert storm (more than XE_TG_BATCH anomalies of one colour for a chat in one poll) the
anomalies are combined, several to a message (within Telegram's 4,096 characters), and their
green replies are combined the same way, each reply to the message that announced them.
When Telegram says to slow down (HTTP 429), the bot waits as long as it is told, and goes on.
What each chat got is recorded as it goes (NAME.n-done, NAME.s-done), so a poll cut short
(network down, bot stopped) is finished by the next one, with nothing sent twice.
It also answers /id (the chat id to put in CHATS) and /help.

Standard library only. Settings come from the environment:
  XE_TG_TOKEN      bot token (required)
  XE_TG_CHATS      comma-separated chat ids to notify
  XE_TG_API        Bot API base URL (default https://api.telegram.org)
  TELEMSG_DIR      message directory (default /var/lib/xenoeye/telemsg/)
  XE_TG_POLL       poll interval, seconds (default 10)
  XE_TG_BATCH      anomalies of one colour sent to a chat one message each in a poll; more
                   are combined (default 5)
Run with --once to process the directory once and exit (tests, cron).
"""
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request

TOKEN = os.environ.get("XE_TG_TOKEN", "")
CHATS = [c.strip() for c in os.environ.get("XE_TG_CHATS", "").split(",") if c.strip()]
API = os.environ.get("XE_TG_API", "https://api.telegram.org").rstrip("/")
MSGS_DIR = os.environ.get("TELEMSG_DIR", "/var/lib/xenoeye/telemsg/")
POLL_INTERVAL = float(os.environ.get("XE_TG_POLL", "10"))
BATCH = int(os.environ.get("XE_TG_BATCH", "5"))

RED, GREEN, YELLOW = "\U0001F534 ", "\U0001F7E2 ", "\U0001F7E1 "
# Characters of a combined message (Telegram takes 4,096).
MAX_TEXT = 3500
# How often a call told to wait (HTTP 429) is tried again, and the longest wait honoured.
RETRIES = 5
MAX_WAIT = 300


def call(method, **params):
    """Calls a Bot API method; returns its result. "Too Many Requests" (429) is waited out
    for as long as Telegram says (retry_after), up to RETRIES times."""
    for attempt in range(RETRIES + 1):
        req = urllib.request.Request(
            "%s/bot%s/%s" % (API, TOKEN, method),
            data=json.dumps(params).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read().decode())
            except ValueError:
                body = {"ok": False, "error_code": e.code, "description": str(e)}
        if body.get("ok"):
            return body.get("result")
        wait = (body.get("parameters") or {}).get("retry_after")
        if body.get("error_code") == 429 and wait is not None and attempt < RETRIES:
            logging.info("%s: Telegram asks to wait %s s", method, wait)
            time.sleep(min(float(wait), MAX_WAIT))
            continue
        raise RuntimeError("%s: %s" % (method, body))


def send(chat_id, text, reply_to=None):
    params = {"chat_id": chat_id, "text": text, "parse_mode": "HTML"}
    if reply_to is not None:
        params["reply_to_message_id"] = int(reply_to)
    return call("sendMessage", **params)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def lines(path):
    """The lines of a file, none when it does not exist."""
    return read(path).splitlines() if os.path.isfile(path) else []


def append(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class Anomaly:
    """One anomaly's message files (NAME.*) and what is to be sent for it now: red (NAME.n),
    yellow (NAME.n and NAME.s, the red not sent) or green (NAME.s; replies to the message
    ids in NAME.-). A red half sent is finished before anything else."""

    def __init__(self, base):
        self.base = base
        has = lambda ext: os.path.isfile(base + ext)
        # A new message to every chat; a green one replies to the red's messages, if sent.
        targets = [(chat, None) for chat in CHATS]
        if has(".n") and (has(".n-done") or not has(".s")):
            self.colour, self.progress = RED, base + ".n-done"
            self.text = read(base + ".n")
        elif has(".n"):
            self.colour, self.progress = YELLOW, base + ".s-done"
            self.text = read(base + ".n") + "\n" + read(base + ".s")
        else:
            self.colour, self.progress = GREEN, base + ".s-done"
            self.text = read(base + ".s")
            if has(".-"):
                targets = [tuple(line.split(":", 1)) for line in lines(base + ".-")]
        done = {line.split(":", 1)[0] for line in lines(self.progress)}
        # (chat, message to reply to) still to send to.
        self.todo = [(chat, reply) for chat, reply in targets if chat not in done]

    def sent(self, chat, message_id):
        """Records that `chat` got this anomaly's message (in message `message_id`)."""
        append(self.progress, "%s:%s" % (chat, message_id) if self.colour == RED else chat)
        self.todo = [t for t in self.todo if t[0] != chat]

    def finish(self):
        """Once every chat got it: the red's message ids go to NAME.-, an end's files go."""
        if self.todo:
            return
        if self.colour == RED:
            # NAME.n goes first: a stop in between must not send the red again.
            os.remove(self.base + ".n")
            if not os.path.isfile(self.progress):
                open(self.progress, "w").close()
            os.rename(self.progress, self.base + ".-")
        else:
            for ext in (".n", ".s", ".-", ".n-done", ".s-done"):
                if os.path.isfile(self.base + ext):
                    os.remove(self.base + ext)


def messages(items):
    """One chat's anomalies of one colour, as (reply_to, [anomaly, ...]) per message: one
    each, or in a storm (more than BATCH) combined, by the message they reply to, within
    MAX_TEXT characters."""
    if len(items) <= BATCH:
        return [(reply, [a]) for a, reply in items]
    out = []
    for a, reply in items:
        if out and out[-1][0] == reply and len(text_of(out[-1][1] + [a])) <= MAX_TEXT:
            out[-1][1].append(a)
        else:
            out.append((reply, [a]))
    return out


def text_of(anomalies):
    return "\n".join(a.colour + a.text.strip() if len(anomalies) > 1 else a.colour + a.text for a in anomalies)


def check_events():
    """Sends what the message directory holds. Ends (.s) go first, so an anomaly that started
    and ended since the last poll is one yellow message."""
    names = os.listdir(MSGS_DIR)
    bases = sorted({os.path.join(MSGS_DIR, n[:-2]) for n in names if n.endswith((".n", ".s"))})
    anomalies = [Anomaly(b) for b in bases]
    try:
        for colour in (YELLOW, GREEN, RED):
            for chat in CHATS + sorted({c for a in anomalies for c, _ in a.todo} - set(CHATS)):
                items = [(a, reply) for a in anomalies if a.colour == colour for c, reply in a.todo if c == chat]
                for reply, group in messages(items):
                    msg = send(chat, text_of(group), reply_to=reply)
                    for a in group:
                        a.sent(chat, msg["message_id"])
    finally:
        for a in anomalies:
            a.finish()


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
