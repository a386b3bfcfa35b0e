"""Shared by the matplotlib chart scripts: query PostgreSQL through psql (no database driver
needed) and draw with matplotlib (Debian: apt install python3-matplotlib)."""
import csv
import io
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DB = os.environ.get("XENOEYE_DB", "postgresql://xenoeye:password@localhost/xenoeyedb")


def ident(name):
    """A table or column name as given on the command line, checked."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        sys.exit("bad name: %s" % name)
    return name


def period(args):
    """FROM and TO from the command line, default the last day (UTC)."""
    now = datetime.now(timezone.utc)
    frm = args[0] if len(args) > 0 else (now - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    to = args[1] if len(args) > 1 else now.strftime("%Y-%m-%d %H:%M:%S+00")
    return "time >= '%s' and time < '%s'" % (frm.replace("'", ""), to.replace("'", ""))


def query(sql):
    """Rows of a query, as lists of strings."""
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", DB, "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr.strip())
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return rows[1:]


def column(table, candidates):
    """The first of `candidates` that the table has, or exit with a message."""
    names = ",".join("'%s'" % ident(c) for c in candidates)
    rows = query("select column_name from information_schema.columns where table_name = '%s' "
                 "and column_name in (%s) limit 1" % (ident(table), names))
    if not rows:
        sys.exit("%s has none of %s" % (table, ", ".join(candidates)))
    return rows[0][0]


def window_seconds(table, cond):
    """The table's window length: the smallest step between its times (30 when unknown)."""
    rows = query("select coalesce(min(step), 30)::int from (select extract(epoch from time - lag(time) over "
                 "(order by time)) as step from (select distinct time from %s where %s) t) s where step > 0"
                 % (table, cond))
    return int(rows[0][0]) if rows else 30


def ts(text):
    return datetime.fromisoformat(text.replace(" ", "T"))


def donut(labels, values, title, out):
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    ax.pie(values, labels=labels, autopct="%1.1f%%", pctdistance=0.8, startangle=90,
           wedgeprops=dict(width=0.4, edgecolor="w"))
    ax.set_title(title)
    fig.savefig(out)


def save(fig, out):
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out)
