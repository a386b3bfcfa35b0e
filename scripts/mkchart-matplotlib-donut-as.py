#!/usr/bin/env python3
"""Donut chart of traffic by autonomous system: the TOP (default 10) ASes, the rest as Other.
usage: mkchart-matplotlib-donut-as.py TABLE OUT.png [FROM [TO]]
TABLE has octets and src_as or dst_as (a window with fields like ["octets", "src as"])."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xe_charts as xc  # noqa: E402

table, out = xc.ident(sys.argv[1]), sys.argv[2]
cond = xc.period(sys.argv[3:])
top = int(os.environ.get("TOP", "10"))
col = xc.column(table, ['src_as', 'dst_as'])
rows = xc.query("select coalesce(%s::text, 'Other'), sum(octets) from %s where %s group by 1 order by 2 desc" % (col, table, cond))
if not rows:
    sys.exit("no rows")
head, rest = rows[:top], rows[top:]
labels = ["AS" + r[0] if r[0] != "Other" else r[0] for r in head]
values = [int(r[1]) for r in head]
if rest:
    labels.append("Other")
    values.append(sum(int(r[1]) for r in rest))
xc.donut(labels, values, "%s: bytes by AS" % table, out)
