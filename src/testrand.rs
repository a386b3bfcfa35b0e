//! A small deterministic pseudo-random source for tests that try many random cases: the same
//! seed gives the same run, so a failure can be replayed, and no crate is needed for it.

/// xorshift64 from `seed` (not zero): each call gives a number below `n`.
pub fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}
