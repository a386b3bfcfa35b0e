#!/usr/bin/env python3
"""Time series by address, stacked, aggregated into AGG-second steps (default 300): the TOP
(default 10) addresses by bytes over the period, the rest as Other. Aggregation smooths bursts.
usage: mkchart-matplotlib-ts-ip.py TABLE OUT.png [FROM [TO]]   (e.g. ingress_octets_by_src)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xe_charts as xc  # noqa: E402

table, out = xc.ident(sys.argv[1]), sys.argv[2]
cond = xc.period(sys.argv[3:])
top = int(os.environ.get("TOP", "10"))
agg = int(os.environ.get("AGG", "300"))
col = xc.column(table, ['src_host', 'dst_host'])
rows = xc.query("""with top as (select host(%(c)s) as ip from %(t)s where %(w)s and %(c)s is not null
                                group by 1 order by sum(octets) desc limit %(n)d)
                   select to_timestamp(floor(extract(epoch from time) / %(a)d) * %(a)d) as step,
                          case when host(%(c)s) in (select ip from top) then host(%(c)s) else 'Other' end,
                          sum(octets)*8/%(a)d
                   from %(t)s where %(w)s group by 1, 2 order by 1""" % dict(c=col, t=table, w=cond, n=top, a=agg))
if not rows:
    sys.exit("no rows")
steps = sorted({r[0] for r in rows})
names = sorted({r[1] for r in rows}, key=lambda n: (n == "Other", n))
series = {n: [0.0] * len(steps) for n in names}
index = {s: i for i, s in enumerate(steps)}
for s, n, v in rows:
    series[n][index[s]] = float(v)
fig, ax = xc.plt.subplots(figsize=(10, 4), dpi=100)
ax.stackplot([xc.ts(s) for s in steps], [series[n] for n in names], labels=names, step="post")
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
ax.set_ylabel("bit/s (%d s average)" % agg)
ax.set_title(table)
xc.save(fig, out)
