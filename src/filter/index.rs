//! Which of many sibling filters a flow can match, found without trying each one.
//!
//! An operator's objects are often hundreds or thousands of siblings (customers, made by a
//! `mo.lua` from a customers file), each `dst net THEIR-PREFIXES and ...`. Tried one by one,
//! they cost every flow a test per sibling: 1,024 siblings made the whole flow path twenty
//! times slower. Most such filters hold a condition on one field that the flow must meet: the
//! filter is a test of that field alone (or of either side of it: `net X`), or such a test is
//! a term of its top-level `and`. Siblings are grouped by that field; for a field that enough
//! siblings test, its value space is cut into intervals, each listing the siblings whose
//! values cover it. A flow's value finds its interval by binary search (both sides' values
//! for `net X`), and only those siblings, with the ones that have no such condition, are
//! tried (their whole filter still decides, unless the test found through the index is the
//! whole filter: then it has decided already). Each sibling is listed under one field only,
//! and the two sides' lists are merged, so none is offered twice for a flow.

use super::ranges::RangeSet;
use super::Filter;
use crate::fields::FieldId;
use crate::flow::Flow;

/// Fewer siblings than this testing one field are tried one by one: a test of a small range
/// set costs about what a lookup does.
pub const MIN_INDEXED: usize = 8;

/// Bounds on one field's index (a customer's prefixes are a few ranges; a thousand objects
/// that each need the same IP list of 100,000 prefixes would be 100 million): past either,
/// that field's siblings are tried one by one, and the load does not use gigabytes first.
/// Ranges over all the siblings' sets:
const MAX_RANGES: usize = 1 << 20;
/// Sibling entries over all the intervals (sets that overlap heavily, such as many siblings
/// each testing a whole /8, list every sibling in every interval):
const MAX_ENTRIES: usize = 1 << 22;

/// The candidates among a list of filters for a flow (see the module documentation).
#[derive(Debug)]
pub struct FilterIndex {
    fields: Vec<FieldIndex>,
    /// Filters without an indexed condition: offered for every flow.
    rest: Vec<u32>,
    /// By filter position: its indexed test is the whole filter, so being offered through
    /// the index means it matches (a thousand customers' `dst net` filters are not run again).
    whole: Vec<bool>,
}

/// The field a condition tests, and its other side when either side may meet it (`net X`).
type Sides = (FieldId, Option<FieldId>);

/// The filters whose condition is on one field, by interval of that field's values.
#[derive(Debug)]
struct FieldIndex {
    sides: Sides,
    /// First value of each interval, ascending from 0: interval `i` is
    /// `starts[i]..starts[i + 1]` (the last one runs to the end of the value space).
    starts: Vec<u128>,
    /// Interval `i`'s filters are `entries[at[i]..at[i + 1]]`.
    at: Vec<u32>,
    entries: Vec<u32>,
}

/// A test of one field (or of either side of one) that the whole filter needs to pass, if it
/// has one: the filter itself, or a term of its top-level `and`: one of one field before one
/// of either side, then the one of fewest ranges (the cheapest to index), then, of two on the
/// same field, the one holding fewer values (the narrower); else the first.
fn necessary_test(filter: &Filter) -> Option<(Sides, &RangeSet)> {
    match filter {
        Filter::Test { fields, set } => match fields[..] {
            [field] => Some(((field, None), set)),
            [src, dst] => Some(((src, Some(dst)), set)),
            _ => None,
        },
        Filter::And(terms) => terms.iter().filter_map(necessary_test).min_by(|(a, a_set), (b, b_set)| {
            let cheaper = (a.1.is_some(), a_set.ranges().len()).cmp(&(b.1.is_some(), b_set.ranges().len()));
            // Widths compare only on one field; otherwise the first term stays.
            cheaper.then_with(|| if a == b { width(a_set).cmp(&width(b_set)) } else { std::cmp::Ordering::Equal })
        }),
        _ => None,
    }
}

/// How many values a set holds, less one per range (saturating): of two tests of one field,
/// the one holding fewer narrows more.
fn width(set: &RangeSet) -> u128 {
    set.ranges().iter().fold(0u128, |w, &(lo, hi)| w.saturating_add(hi - lo))
}

/// Calls `f` with each value of two ascending lists once.
#[inline]
fn union_sorted(mut a: &[u32], mut b: &[u32], f: &mut impl FnMut(usize)) {
    while let (Some(&x), Some(&y)) = (a.first(), b.first()) {
        f(x.min(y) as usize);
        if x <= y {
            a = &a[1..];
        }
        if y <= x {
            b = &b[1..];
        }
    }
    a.iter().chain(b).for_each(|&i| f(i as usize));
}

impl FilterIndex {
    /// An index over `filters` (offered by their position in it), or `None` when no field is
    /// tested by [`MIN_INDEXED`] of them: then trying each is as fast.
    pub fn new<'a>(filters: impl IntoIterator<Item = &'a Filter>) -> Option<FilterIndex> {
        Self::bounded(filters, MAX_RANGES, MAX_ENTRIES)
    }

    /// [`FilterIndex::new`] with a field's index bounded to `max_ranges` ranges of its
    /// siblings' sets and `max_entries` entries.
    fn bounded<'a>(filters: impl IntoIterator<Item = &'a Filter>, max_ranges: usize, max_entries: usize) -> Option<FilterIndex> {
        let mut by_field: Vec<(Sides, Vec<(u32, &RangeSet)>)> = Vec::new();
        let mut rest = Vec::new();
        let mut whole = Vec::new();
        for (i, filter) in filters.into_iter().enumerate() {
            whole.push(matches!(filter, Filter::Test { .. }));
            match necessary_test(filter) {
                Some((sides, set)) => match by_field.iter_mut().find(|(s, _)| *s == sides) {
                    Some((_, list)) => list.push((i as u32, set)),
                    None => by_field.push((sides, vec![(i as u32, set)])),
                },
                None => rest.push(i as u32),
            }
        }
        let mut fields = Vec::new();
        for (sides, list) in by_field {
            let ranges: usize = list.iter().map(|(_, set)| set.ranges().len()).sum();
            let wanted = list.len() >= MIN_INDEXED && ranges <= max_ranges;
            match wanted.then(|| FieldIndex::new(sides, &list, max_entries)).flatten() {
                Some(index) => fields.push(index),
                None => rest.extend(list.iter().map(|&(i, _)| i)),
            }
        }
        rest.sort_unstable();
        (!fields.is_empty()).then_some(FilterIndex { fields, rest, whole })
    }

    /// Calls `f` with the position of every filter `flow` may match, each once (the others
    /// cannot match it), and whether it is known to match: true when the filter is the test
    /// the index decided; false when its filter must decide.
    #[inline]
    pub fn for_each_candidate(&self, flow: &Flow, mut f: impl FnMut(usize, bool)) {
        let mut indexed = |i: usize| f(i, self.whole[i]);
        for index in &self.fields {
            let of = |field: FieldId| flow.get(field).map_or(&[][..], |v| index.candidates(v));
            match index.sides {
                (field, None) => of(field).iter().for_each(|&i| indexed(i as usize)),
                (src, Some(dst)) => union_sorted(of(src), of(dst), &mut indexed),
            }
        }
        self.rest.iter().for_each(|&i| f(i as usize, false));
    }
}

impl FieldIndex {
    /// The intervals of `list`'s sets (filter position, set); `None` past `max_entries`.
    fn new(sides: Sides, list: &[(u32, &RangeSet)], max_entries: usize) -> Option<FieldIndex> {
        // Where each filter's ranges begin and end (one past), swept in value order.
        let mut events: Vec<(u128, bool, u32)> = Vec::new();
        for &(i, set) in list {
            for &(lo, hi) in set.ranges() {
                events.push((lo, true, i));
                if let Some(end) = hi.checked_add(1) {
                    events.push((end, false, i));
                }
            }
        }
        events.sort_unstable();
        let mut index = FieldIndex { sides, starts: vec![0], at: vec![0], entries: Vec::new() };
        let mut active: Vec<u32> = Vec::new();
        let mut e = 0;
        while e < events.len() {
            let at = events[e].0;
            while e < events.len() && events[e].0 == at {
                let (_, begins, i) = events[e];
                if begins {
                    active.push(i);
                } else if let Some(k) = active.iter().position(|&a| a == i) {
                    active.swap_remove(k);
                }
                e += 1;
            }
            active.sort_unstable();
            index.push_interval(at, &active);
            if index.entries.len() > max_entries {
                return None;
            }
        }
        Some(index)
    }

    /// Starts an interval at `at` holding `active`, unless it holds what the one before does.
    fn push_interval(&mut self, at: u128, active: &[u32]) {
        let last = self.starts.len() - 1;
        if self.candidates_of(last) == active {
            return;
        }
        if self.starts[last] == at {
            // Value 0 itself starts a range: the first interval is that one.
            self.entries.truncate(self.at[last] as usize);
        } else {
            self.starts.push(at);
            self.at.push(self.entries.len() as u32);
        }
        self.entries.extend_from_slice(active);
    }

    fn candidates_of(&self, interval: usize) -> &[u32] {
        let end = self.at.get(interval + 1).map_or(self.entries.len(), |&e| e as usize);
        &self.entries[self.at[interval] as usize..end]
    }

    #[inline]
    fn candidates(&self, v: u128) -> &[u32] {
        // starts[0] is 0: at least one start is <= v.
        self.candidates_of(self.starts.partition_point(|&s| s <= v) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::compile;
    use crate::filter::iplist::IpLists;

    fn filters(texts: &[String]) -> Vec<Filter> {
        texts.iter().map(|t| compile(t, &IpLists::new()).unwrap()).collect()
    }

    fn flow(src: u32, dst: u32, port: u16) -> Flow {
        let mut f = Flow::default();
        f.set(FieldId::SrcHost, src as u128);
        f.set(FieldId::DstHost, dst as u128);
        f.set(FieldId::DstPort, port as u128);
        f
    }

    fn candidates(index: &FilterIndex, flow: &Flow) -> Vec<usize> {
        let mut out = Vec::new();
        index.for_each_candidate(flow, |i, _| out.push(i));
        out
    }

    /// Positions of the filters a flow matches, tried one by one and through the index (as
    /// objects use it: a filter known to match is not run).
    fn matched(filters: &[Filter], index: &FilterIndex, flow: &Flow) -> (Vec<usize>, Vec<usize>) {
        let direct = (0..filters.len()).filter(|&i| filters[i].matches(flow)).collect();
        let mut indexed = Vec::new();
        index.for_each_candidate(flow, |i, sure| {
            if sure || filters[i].matches(flow) {
                indexed.push(i);
            }
        });
        indexed.sort_unstable();
        (direct, indexed)
    }

    #[test]
    fn customers_by_destination_network() {
        // 64 customers of a /26 each, one also with a port condition, and two objects the
        // index cannot narrow (either side; no filter).
        let mut texts: Vec<String> = (0..64).map(|i| format!("dst net 10.11.{}.{}/26", i / 4, i % 4 * 64)).collect();
        texts[5] = format!("{} and dst port 80", texts[5]);
        texts.push("net 10.11.0.0/16".into());
        texts.push(String::new());
        let fs = filters(&texts);
        let index = FilterIndex::new(&fs).expect("64 filters of dst host");
        assert_eq!(index.rest, vec![64, 65]);
        let host = |c: u32, d: u32| 10 << 24 | 11 << 16 | c << 8 | d;
        assert_eq!(candidates(&index, &flow(1, host(0, 70), 80)), vec![1, 64, 65]);
        assert_eq!(candidates(&index, &flow(1, host(15, 255), 80)), vec![63, 64, 65]);
        assert_eq!(candidates(&index, &flow(1, host(16, 0), 80)), vec![64, 65], "past the last customer");
        assert_eq!(candidates(&index, &flow(1, 0, 80)), vec![64, 65], "value 0, below every range");
        // A customer's filter is the test the index decided: it is known to match; customer
        // 5's port, and the two not indexed, are left to their filters.
        let sure = |f: &Flow| {
            let mut out = Vec::new();
            index.for_each_candidate(f, |i, sure| out.push((i, sure)));
            out
        };
        assert_eq!(sure(&flow(1, host(0, 70), 80)), vec![(1, true), (64, false), (65, false)]);
        assert_eq!(sure(&flow(1, host(1, 70), 80)), vec![(5, false), (64, false), (65, false)]);
        // Candidates narrow, the filter decides: customer 5 needs port 80.
        let f = flow(1, host(1, 70), 443);
        assert_eq!(matched(&fs, &index, &f), (vec![64, 65], vec![64, 65]));
        let f = flow(1, host(1, 70), 80);
        assert_eq!(matched(&fs, &index, &f), (vec![5, 64, 65], vec![5, 64, 65]));
    }

    #[test]
    fn customers_by_network_on_either_side_are_offered_once() {
        // 16 customers of a /24 each, either direction (`net`); then 8 services, each `net`
        // and a port: the one-field term (the port) is the one indexed.
        let mut texts: Vec<String> = (0..16).map(|i| format!("net 10.11.{i}.0/24")).collect();
        texts.extend((0..8).map(|j| format!("net 10.12.{j}.0/24 and dst port {}", 8000 + j)));
        let fs = filters(&texts);
        let index = FilterIndex::new(&fs).expect("16 filters of either host, 8 of dst port");
        assert!(index.rest.is_empty());
        assert_eq!(index.fields.iter().map(|x| x.sides).collect::<Vec<_>>(), vec![(FieldId::SrcHost, Some(FieldId::DstHost)), (FieldId::DstPort, None)]);
        let host = |c: u32, d: u32| 10 << 24 | 11 << 16 | c << 8 | d;
        assert_eq!(candidates(&index, &flow(host(1, 5), host(2, 9), 0)), vec![1, 2]);
        assert_eq!(candidates(&index, &flow(host(7, 5), host(7, 9), 0)), vec![7], "inside one customer: once");
        assert_eq!(candidates(&index, &flow(host(9, 1), 1, 0)), vec![9], "from a customer");
        assert_eq!(candidates(&index, &flow(1, 2, 0)), Vec::<usize>::new());
        let service = |j: u32| 10 << 24 | 12 << 16 | j << 8 | 1;
        assert_eq!(candidates(&index, &flow(1, service(2), 8002)), vec![18]);
        assert_eq!(candidates(&index, &flow(1, service(2), 8003)), vec![19], "a candidate by its port; its filter decides");
        let f = flow(1, service(2), 8003);
        assert_eq!(matched(&fs, &index, &f), (vec![], vec![]));
        let f = flow(host(4, 4), service(2), 8002);
        assert_eq!(matched(&fs, &index, &f), (vec![4, 18], vec![4, 18]));
    }

    #[test]
    fn the_narrowest_term_is_indexed_and_big_sets_are_not() {
        // Each needs the same /8 and a host of its own: the host is the term indexed.
        let texts: Vec<String> = (0..8).map(|i| format!("dst net 10.0.0.0/8 and dst host 10.0.0.{i}")).collect();
        let fs = filters(&texts);
        let index = FilterIndex::new(&fs).unwrap();
        assert_eq!(candidates(&index, &flow(0, 0x0a00_0003, 0)), vec![3]);
        // Past the bounds on ranges or on entries, the siblings are tried one by one.
        let texts: Vec<String> = (0..8).map(|i| format!("dst host 10.0.0.{i} or 10.0.1.{i}")).collect();
        let fs = filters(&texts);
        assert!(FilterIndex::bounded(&fs, 16, 1000).is_some());
        assert!(FilterIndex::bounded(&fs, 15, 1000).is_none(), "16 ranges");
        let texts: Vec<String> = (0..8).map(|i| format!("dst net 10.0.0.0/{}", 24 - i)).collect();
        let fs = filters(&texts);
        let index = FilterIndex::bounded(&fs, 16, 1000).unwrap();
        let entries = index.fields[0].entries.len();
        assert_eq!(entries, (1..=8).sum::<usize>(), "nested sets: 8 intervals of 1 to 8 siblings");
        assert!(FilterIndex::bounded(&fs, 16, entries - 1).is_none());
    }

    #[test]
    fn too_few_siblings_on_one_field_are_not_indexed() {
        let texts: Vec<String> = (0..MIN_INDEXED - 1).map(|i| format!("dst host 10.0.0.{i}")).collect();
        assert!(FilterIndex::new(&filters(&texts)).is_none());
    }

    #[test]
    fn nested_and_overlapping_sets_and_the_top_of_the_value_space() {
        let mut texts: Vec<String> = (0..10).map(|i| format!("dst net 10.{i}.0.0/16")).collect();
        texts.push("dst net 10.0.0.0/8".into()); // 10: over all the others
        texts.push("dst net 10.0.0.0/24 or 10.5.0.0/16".into()); // 11: two ranges
        texts.push("dst host 255.255.255.255".into()); // 12: the last IPv4 value
        texts.push("dst net 0.0.0.0/0 and src port 53".into()); // 13: the whole space
        let fs = filters(&texts);
        let index = FilterIndex::new(&fs).unwrap();
        assert!(index.rest.is_empty());
        let at = |a: u32| {
            let mut c = candidates(&index, &flow(0, a, 0));
            c.sort_unstable();
            c
        };
        assert_eq!(at(0x0a00_0001), vec![0, 10, 11, 13]);
        assert_eq!(at(0x0a00_0101), vec![0, 10, 13]);
        assert_eq!(at(0x0a05_ffff), vec![5, 10, 11, 13]);
        assert_eq!(at(0x0a0a_0000), vec![10, 13]);
        assert_eq!(at(0x0b00_0000), vec![13]);
        assert_eq!(at(u32::MAX), vec![12, 13]);
    }

    /// Random filters of the shapes objects use, and random flows: through the index, the
    /// same filters match as when each is tried.
    #[test]
    fn the_index_matches_what_trying_each_filter_matches() {
        let mut next = crate::testrand::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut rnd = move |n: u32| next(n as u64) as u32;
        for _ in 0..20 {
            let texts: Vec<String> = (0..80)
                .map(|_| {
                    let net = format!("10.{}.{}.0/{}", rnd(4), rnd(256), [16, 20, 24, 28, 32][rnd(5) as usize]);
                    match rnd(6) {
                        0 => format!("dst net {net}"),
                        1 => format!("src net {net} and dst port {}", rnd(4)),
                        2 => format!("dst net {net} or 10.{}.0.0/16", rnd(4)),
                        3 => format!("net {net}"),
                        4 => {
                            let lo = rnd(3);
                            format!("dst port {lo}-{}", lo + rnd(3))
                        }
                        _ => format!("not dst net {net}"),
                    }
                })
                .collect();
            let fs = filters(&texts);
            let index = FilterIndex::new(&fs).expect("enough dst/src host filters");
            for _ in 0..500 {
                let src = 0x0a00_0000 | rnd(4) << 16 | rnd(256) << 8 | rnd(256);
                let dst = 0x0a00_0000 | rnd(4) << 16 | rnd(256) << 8 | rnd(256);
                let f = flow(src, dst, rnd(5) as u16);
                let (direct, indexed) = matched(&fs, &index, &f);
                assert_eq!(direct, indexed, "filters {texts:?}");
                let mut offered = candidates(&index, &f);
                let n = offered.len();
                offered.sort_unstable();
                offered.dedup();
                assert_eq!(offered.len(), n, "a filter offered twice");
            }
        }
    }
}
