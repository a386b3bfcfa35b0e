//! The clock of the moving averages: the datagrams' time (the system clock live, the capture's
//! time in a replay) with its steps back taken out.
//!
//! A moving average decays by the time between two flows of a key. When the system clock is
//! set back (an NTP step, a virtual machine's clock fixed after a pause), every row was last
//! updated "in the future": flows added no decay until the clock caught up again, so steady
//! traffic summed up without bound and crossed every overlimit (20 s back at 60% of a threshold
//! started the action scripts of all its levels). Here time never goes back: a step back is
//! absorbed into an offset, so the averages go on from where they were, and the offset is then
//! worked off at 1/256 of the time that passes (rates read at most 0.4% high meanwhile), so the
//! clock returns to the system's (a 20 s step in 85 minutes). Small backward jitter (frames of
//! a capture slightly out of order) is absorbed the same way and gone within a second or two.
//! Fixed windows keep the system's time: their files are named by it (a step back makes the
//! open window last longer; no flow is lost).

/// Steps back of at least this much are logged.
const LOGGED_STEP_MS: u64 = 1000;
/// The offset shrinks by 1/2^SLEW_SHIFT of the time that passes.
const SLEW_SHIFT: u32 = 8;

/// A worker's moving-average clock (unix ms), never going back.
#[derive(Debug, Default)]
pub struct MavgClock {
    /// How far ahead of the source time this clock is.
    offset: u64,
    /// The last time given out.
    last: u64,
    /// Time passed (ms) not yet counted towards working off the offset (under 2^SLEW_SHIFT).
    passed: u64,
}

impl MavgClock {
    /// The clock at source time `source_ms`: never before the last one given out. A step back
    /// of a second or more is returned with it (for a log line), in ms.
    #[inline]
    pub fn at(&mut self, source_ms: u64) -> (u64, Option<u64>) {
        let mut t = source_ms + self.offset;
        let mut step = None;
        if t < self.last {
            let back = self.last - t;
            self.offset += back;
            t = self.last;
            step = (back >= LOGGED_STEP_MS).then_some(back);
        } else if self.offset > 0 {
            self.passed += t - self.last;
            let slew = (self.passed >> SLEW_SHIFT).min(self.offset);
            self.passed &= (1 << SLEW_SHIFT) - 1;
            self.offset -= slew;
            t -= slew;
        }
        self.last = t;
        (t, step)
    }

    /// The time it takes to work off a step back of `back_ms` (ms).
    pub fn catch_up_ms(back_ms: u64) -> u64 {
        back_ms << SLEW_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_time_passes_through() {
        let mut c = MavgClock::default();
        for t in [1_000, 1_000, 1_005, 60_000, 3_600_000] {
            assert_eq!(c.at(t), (t, None));
        }
    }

    #[test]
    fn a_step_back_is_absorbed_then_worked_off() {
        let mut c = MavgClock::default();
        assert_eq!(c.at(100_000).0, 100_000);
        // 20 s back: the clock stays where it was, and goes on at the source's pace less 1/256.
        assert_eq!(c.at(80_000), (100_000, Some(20_000)));
        assert_eq!(c.at(80_256), (100_255, None));
        let mut last = 100_255;
        let mut source = 80_256;
        while source < 80_000 + 2 * 256 * 20_000 {
            source += 100;
            let (t, step) = c.at(source);
            assert!(t >= last && step.is_none());
            assert!(t - last <= 100);
            last = t;
        }
        // 20 s is worked off within 256 x 20 s of source time: back in step.
        assert_eq!(c.at(source + 1000).0, source + 1000);
    }

    #[test]
    fn jitter_is_absorbed_and_gone_quickly() {
        let mut c = MavgClock::default();
        assert_eq!(c.at(50_000).0, 50_000);
        assert_eq!(c.at(49_995), (50_000, None), "5 ms back: not logged");
        let t: Vec<u64> = (1..=20).map(|i| c.at(50_000 + i * 100).0).collect();
        assert_eq!(t[19], 52_000, "in step again within 2 s: {t:?}");
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }
}
