//! Sets of value ranges: the one matcher behind every filter test.
//!
//! A host is the range `[a, a]`, a network `[first, last]`, a port range `[lo, hi]`, an IP list
//! thousands of such ranges. Ranges are sorted and merged once at compile time; a lookup is a
//! short scan for small sets and a binary search for large ones (an IP list of 100,000 prefixes
//! takes 17 comparisons).

/// Sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

/// Below this many ranges a linear scan beats binary search.
const LINEAR: usize = 8;

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
        RangeSet { ranges: merged }
    }

    #[inline]
    pub fn contains(&self, v: u128) -> bool {
        if self.ranges.len() <= LINEAR {
            return self.ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi);
        }
        // The last range starting at or before v is the only candidate.
        let idx = self.ranges.partition_point(|&(lo, _)| lo <= v);
        idx > 0 && v <= self.ranges[idx - 1].1
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
    fn prefixes() {
        assert_eq!(prefix_range(0x0A0B0C05, 24, 32), (0x0A0B0C00, 0x0A0B0CFF));
        assert_eq!(prefix_range(0x0A0B0C05, 32, 32), (0x0A0B0C05, 0x0A0B0C05));
        assert_eq!(prefix_range(5, 0, 32), (0, 0xFFFF_FFFF));
        assert_eq!(prefix_range(5, 0, 128), (0, u128::MAX));
    }
}
