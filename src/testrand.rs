//! A small deterministic pseudo-random source for tests that try many random cases: the same
//! seed gives the same run, so a failure can be replayed, and no crate is needed for it. The
//! one xorshift64 of the suite: the property tests of every module draw from it.

/// xorshift64 from a seed (not zero).
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64-bit word.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// [`XorShift`] from `seed` as a closure: each call gives the next word.
pub fn words(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = XorShift(seed);
    move || rng.next()
}

/// [`XorShift`] from `seed` as a closure: each call gives the next word below `n`.
pub fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut rng = XorShift(seed);
    move |n| rng.next() % n
}
