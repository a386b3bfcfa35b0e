//! Sets of value ranges: the one matcher behind every filter test.
//!
//! A host is the range `[a, a]`, a network `[first, last]`, a port range `[lo, hi]`, an IP list
//! thousands of such ranges. Ranges are sorted and merged once at compile time; a lookup is a
//! short scan for small sets and a binary search for large ones. Large sets also keep an index
//! by the top 16 bits of the value, so the binary search runs over the few ranges of one
//! bucket instead of all of them (an IP list of 100,000 prefixes: a handful of comparisons in
//! one or two cache lines instead of 17 scattered ones).

/// Sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
    /// For large sets: `index[b]` is the first range starting at or after bucket `b`
    /// (buckets are the top 16 bits of the value space, `shift` away).
    index: Vec<u32>,
    shift: u32,
}

/// Below this many ranges a linear scan beats binary search.
const LINEAR: usize = 8;

/// From this many ranges on, a bucket index is built.
const INDEXED: usize = 1024;

impl RangeSet {
    /// Builds the set from ranges in any order (overlapping ones are merged).
    pub fn new(mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.retain(|(lo, hi)| lo <= hi);
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        merged.shrink_to_fit();
        let mut set = RangeSet { ranges: merged, index: Vec::new(), shift: 0 };
        if set.ranges.len() >= INDEXED {
            // IPv4 addresses and small numbers live below 2^32; IPv6 addresses use all 128 bits.
            let max = set.ranges.last().map(|r| r.1).unwrap_or(0);
            set.shift = if max <= u32::MAX as u128 { 16 } else { 112 };
            set.index = (0..=1u128 << 16)
                .map(|b| set.ranges.partition_point(|&(lo, _)| (lo >> set.shift) < b) as u32)
                .collect();
        }
        set
    }

    #[inline]
    pub fn contains(&self, v: u128) -> bool {
        if self.ranges.len() <= LINEAR {
            return self.ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi);
        }
        let (from, to) = match self.index.len() {
            0 => (0, self.ranges.len()),
            _ => {
                let b = v >> self.shift;
                if b >= 1 << 16 {
                    return false; // above the value space of the set (an IPv6 value in a v4 set)
                }
                // A range that starts in an earlier bucket may still cover v: keep one before.
                let first = self.index[b as usize] as usize;
                (first.saturating_sub(1), self.index[b as usize + 1] as usize)
            }
        };
        // The last range starting at or before v is the only candidate.
        let part = &self.ranges[from..to];
        let idx = part.partition_point(|&(lo, _)| lo <= v);
        idx > 0 && v <= part[idx - 1].1
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }
}

/// The range of addresses of a prefix in a space of `bits` bits.
pub fn prefix_range(addr: u128, len: u32, bits: u32) -> (u128, u128) {
    let host_bits = bits - len.min(bits);
    let mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let lo = addr & !mask;
    (lo, lo | mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_lookup() {
        let s = RangeSet::new(vec![(10, 20), (15, 30), (31, 31), (50, 60), (5, 5)]);
        assert_eq!(s.ranges(), &[(5, 5), (10, 31), (50, 60)]);
        for (v, want) in [(4, false), (5, true), (9, false), (10, true), (31, true), (32, false), (60, true), (61, false)] {
            assert_eq!(s.contains(v), want, "{v}");
        }
    }

    #[test]
    fn binary_search_agrees_with_scan() {
        let ranges: Vec<_> = (0..1000u128).map(|i| (i * 10, i * 10 + 3)).collect();
        let s = RangeSet::new(ranges.clone());
        for v in 0..10_050u128 {
            assert_eq!(s.contains(v), ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi), "{v}");
        }
    }

    #[test]
    fn bucket_index_agrees_with_scan() {
        let mut next = crate::testrand::words(99);
        for wide in [false, true] {
            let ranges: Vec<(u128, u128)> = (0..5000)
                .map(|_| {
                    let lo = if wide { (next() as u128) << 64 | next() as u128 } else { next() as u32 as u128 };
                    (lo, lo.saturating_add((next() % 70_000) as u128))
                })
                .collect();
            let set = RangeSet::new(ranges.clone());
            assert!(!set.index.is_empty());
            for r in &ranges {
                for v in [r.0, r.1, r.0.wrapping_sub(1), r.1.wrapping_add(1)] {
                    assert_eq!(set.contains(v), ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi), "{v}");
                }
            }
            assert_eq!(set.contains(u128::MAX), ranges.iter().any(|&(_, hi)| hi == u128::MAX));
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_range(0x0A0B0C05, 24, 32), (0x0A0B0C00, 0x0A0B0CFF));
        assert_eq!(prefix_range(0x0A0B0C05, 32, 32), (0x0A0B0C05, 0x0A0B0C05));
        assert_eq!(prefix_range(5, 0, 32), (0, 0xFFFF_FFFF));
        assert_eq!(prefix_range(5, 0, 128), (0, u128::MAX));
    }
}
