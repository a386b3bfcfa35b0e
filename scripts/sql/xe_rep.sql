-- xe_rep(): top-N report for Grafana and ad-hoc queries.
--
--   select tm as time, val as bps, name
--     from xe_rep('ingress_octets_by_src', 'src_host', 'octets', '*8/30', $$ $__timeFilter(time) $$, 20);
--
-- src       table (e.g. ingress_octets_by_src)
-- fld       key column or expression shown as "name" (e.g. src_host)
-- aggr_fld  summed column (octets, packets)
-- k         appended to the sum, e.g. '*8/30' for bits per second of 30-second windows
-- cond      WHERE condition (e.g. Grafana's $__timeFilter(time))
-- ntop      the keys with the largest sums over the whole period are named; every other
--           row (and the NULL remainder rows of limited exports) is summed as 'Other'
-- unk       name shown for an empty key (default '?')
--
-- The arguments are pasted into the query: call it from trusted dashboards only.
CREATE OR REPLACE FUNCTION xe_rep(
    src TEXT, fld TEXT, aggr_fld TEXT, k TEXT, cond TEXT,
    ntop INT DEFAULT 20, unk TEXT DEFAULT '?'
) RETURNS TABLE (tm TIMESTAMPTZ, val BIGINT, name TEXT)
LANGUAGE plpgsql AS $xe_rep$
BEGIN
    RETURN QUERY EXECUTE format($query$
        WITH picked AS (
            SELECT time, (%3$s)::numeric AS v, (%2$s)::text AS key FROM %1$s WHERE %5$s
        ), top AS (
            SELECT key FROM picked WHERE key IS NOT NULL
            GROUP BY key ORDER BY sum(v) DESC LIMIT %6$s
        ), named AS (
            SELECT time, v,
                   CASE WHEN key IN (SELECT key FROM top) THEN COALESCE(NULLIF(key, ''), %7$L)
                        ELSE 'Other' END AS label
            FROM picked
        )
        SELECT time, (sum(v) %4$s)::bigint, label FROM named GROUP BY time, label ORDER BY time, label
    $query$, src, fld, aggr_fld, k, cond, ntop, unk);
END;
$xe_rep$;
