#!/usr/bin/env python3
"""Donut chart of traffic by protocol.
usage: mkchart-matplotlib-donut-prot.py TABLE OUT.png [FROM [TO]]   (e.g. ingress_proto)
Names from the iana_protocols table when it exists (scripts/iana-protocols.sh)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xe_charts as xc  # noqa: E402

table, out = xc.ident(sys.argv[1]), sys.argv[2]
cond = xc.period(sys.argv[3:])
named = xc.query("select to_regclass('iana_protocols') is not null")[0][0] == "t"
name = "coalesce(p.name, t.proto::text)" if named else "t.proto::text"
join = "left join iana_protocols p on p.num = t.proto" if named else ""
rows = xc.query("select %s, sum(t.octets) from %s t %s where t.%s group by 1 order by 2 desc" % (name, table, join, cond))
if not rows:
    sys.exit("no rows")
xc.donut([r[0] for r in rows], [int(r[1]) for r in rows], "%s: bytes by protocol" % table, out)
