//! The PostgreSQL dialect of export files, byte for byte in the original collector's shape:
//! `create table if not exists`, an index on `time`, one multi-row `insert`.

use crate::fields::{FieldId, Kind};
use crate::flow::addr_from_u128;
use crate::objects::window::{Aggs, ColumnSource, FwmSpec, Key};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

fn sql_type(spec: &FwmSpec, source: ColumnSource) -> &'static str {
    match source {
        ColumnSource::Agg(_) => "BIGINT",
        ColumnSource::Key(i) => match spec.keys[i].def().kind {
            Kind::Ipv4 | Kind::Ipv6 | Kind::Addr => "INET",
            Kind::Mac => "MACADDR",
            Kind::Uint | Kind::Counter => "BIGINT",
        },
    }
}

fn value(field: FieldId, v: Option<u128>, out: &mut String) {
    let Some(v) = v else {
        out.push_str("NULL");
        return;
    };
    let _ = match field.def().kind {
        Kind::Ipv4 => write!(out, "'{}'", Ipv4Addr::from(v as u32)),
        Kind::Ipv6 => write!(out, "'{}'", Ipv6Addr::from(v)),
        Kind::Addr => write!(out, "'{}'", addr_from_u128(v)),
        Kind::Mac => {
            let b = (v as u64).to_be_bytes();
            write!(out, "'{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}'", b[2], b[3], b[4], b[5], b[6], b[7])
        }
        Kind::Uint | Kind::Counter => write!(out, "{v}"),
    };
}

/// The whole export file of one window.
pub fn render_pg(spec: &FwmSpec, time: u64, rows: &[(Key, Aggs)]) -> String {
    let t = &spec.table;
    let mut s = format!("create table if not exists \"{t}\" (\n  time TIMESTAMPTZ");
    for c in &spec.columns {
        let _ = write!(s, ",\n  {} {}", c.name, sql_type(spec, c.source));
    }
    s.push_str(");\n\n");
    if spec.create_index {
        let _ = write!(s, "create index if not exists \"{t}_idx\" on \"{t}\"(time);\n\n");
    }
    let _ = writeln!(s, "insert into \"{t}\" values");
    for (n, (key, sums)) in rows.iter().enumerate() {
        let _ = write!(s, "  ( to_timestamp({time}),");
        for (i, c) in spec.columns.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("  ");
            match c.source {
                ColumnSource::Agg(a) => {
                    let _ = write!(s, "{}", sums[a]);
                }
                ColumnSource::Key(k) => value(spec.keys[k], key.get(k), &mut s),
            }
            s.push(' ');
        }
        s.push_str(if n + 1 == rows.len() { ");\n" } else { "),\n" });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::rows::{KeyLayout, RowMap};
    use crate::objects::window::{Agg, Column};

    fn spec(limit: Option<usize>) -> FwmSpec {
        let columns = vec![
            Column { name: "octets".into(), source: ColumnSource::Agg(0), desc: true },
            Column { name: "packets".into(), source: ColumnSource::Agg(1), desc: false },
            Column { name: "dst_host".into(), source: ColumnSource::Key(0), desc: false },
        ];
        FwmSpec { limit, ..FwmSpec::for_tests("ingress", "by_dst", columns, vec![FieldId::DstHost], vec![Agg::Octets, Agg::Packets], 30) }
    }

    fn rows() -> RowMap {
        let l = KeyLayout::new(&[FieldId::DstHost]);
        let mut m = RowMap::new(l.words, 3, 0);
        m.add(&l.pack_values(&[Some(0x91009716)]), &[2686420, 2486, 0]);
        m.add(&l.pack_values(&[Some(0x01020304)]), &[1000, 10, 0]);
        m.add(&l.pack_values(&[Some(0x05060708)]), &[1629220, 2234, 0]);
        m.add(&l.pack_values(&[Some(0x05060709)]), &[1629220, 20, 0]);
        m
    }

    #[test]
    fn the_spec_example_shape() {
        let s = spec(Some(1));
        let r = rows().export_rows(&s);
        let text = render_pg(&s, 1795756380, &r);
        assert_eq!(
            text,
            "create table if not exists \"ingress_by_dst\" (\n  time TIMESTAMPTZ,\n  octets BIGINT,\n  packets BIGINT,\n  dst_host INET);\n\n\
             create index if not exists \"ingress_by_dst_idx\" on \"ingress_by_dst\"(time);\n\n\
             insert into \"ingress_by_dst\" values\n\
             \x20 ( to_timestamp(1795756380),  2686420 ,  2486 ,  '145.0.151.22' ),\n\
             \x20 ( to_timestamp(1795756380),  3259440 ,  2264 ,  NULL );\n"
        );
    }

    #[test]
    fn create_index_off_leaves_the_index_out() {
        let s = FwmSpec { create_index: false, ..spec(None) };
        let text = render_pg(&s, 1795756380, &rows().export_rows(&s));
        assert!(text.starts_with("create table if not exists \"ingress_by_dst\" (\n  time TIMESTAMPTZ,\n  octets BIGINT,\n  packets BIGINT,\n  dst_host INET);\n\ninsert into \"ingress_by_dst\" values\n"), "{text}");
        assert!(!text.contains("create index"));
    }

    #[test]
    fn sort_order_follows_fields_and_desc() {
        let s = spec(None);
        let r = rows().export_rows(&s);
        let octets: Vec<u64> = r.iter().map(|(_, a)| a[0]).collect();
        assert_eq!(octets, vec![2686420, 1629220, 1629220, 1000]);
        // Equal octets: then packets ascending.
        assert_eq!((r[1].1[1], r[2].1[1]), (20, 2234));
        let total: u64 = r.iter().map(|(_, a)| a[0]).sum();
        let limited: u64 = rows().export_rows(&spec(Some(2))).iter().map(|(_, a)| a[0]).sum();
        assert_eq!(total, limited, "top-N plus the NULL row keeps the total");
        assert_eq!(rows().export_rows(&spec(Some(4))).len(), 4, "no NULL row when nothing is left over");
    }
}
