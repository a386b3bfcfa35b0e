#!/usr/bin/env python3
"""Time series of a table's traffic in bits per second.
usage: mkchart-matplotlib-ts.py TABLE OUT.png [FROM [TO]]   (e.g. ingress_all)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xe_charts as xc  # noqa: E402

table, out = xc.ident(sys.argv[1]), sys.argv[2]
cond = xc.period(sys.argv[3:])
win = xc.window_seconds(table, cond)
rows = xc.query("select time, sum(octets)*8/%d from %s where %s group by 1 order by 1" % (win, table, cond))
if not rows:
    sys.exit("no rows")
fig, ax = xc.plt.subplots(figsize=(10, 4), dpi=100)
ax.fill_between([xc.ts(r[0]) for r in rows], [float(r[1]) for r in rows], step="post")
ax.set_ylabel("bit/s")
ax.set_title(table)
xc.save(fig, out)
