//! The clock of the moving averages: the datagrams' time (the system clock live, the capture's
//! time in a replay) with its steps taken out.
//!
//! A moving average decays by the time between two flows of a key. When the system clock is
//! set back (an NTP step, a virtual machine's clock fixed after a pause), every row was last
//! updated "in the future": flows added no decay until the clock caught up again, so steady
//! traffic summed up without bound and crossed every overlimit (20 s back at 60% of a threshold
//! started the action scripts of all its levels). Here time never goes back: a step back is
//! absorbed into an offset, so the averages go on from where they were, and the offset is then
//! worked off at 1/256 of the time that passes (rates read at most 0.4% off meanwhile), so the
//! clock returns to the system's (a 20 s step in 85 minutes). Small backward jitter (frames of
//! a capture slightly out of order) is absorbed the same way and gone within a second or two.
//! Live, the monotonic clock also tells a step forward from time that passed: a jump ahead
//! decayed every average to nothing at once, and the next sweep found every active alert back
//! to normal (its `back2norm-time` seemingly over) in the middle of an attack; the jump is
//! taken out the same way, and made up at the same pace.
//! Fixed windows keep the system's time: their files are named by it (a step back makes the
//! open window last longer; no flow is lost).

/// Steps of at least this much are logged.
const LOGGED_STEP_MS: i64 = 1000;
/// The clock moves towards the source by at most 1/2^SLEW_SHIFT of the time that passes.
const SLEW_SHIFT: u32 = 8;

/// A worker's moving-average clock (unix ms), never going back.
#[derive(Debug, Default)]
pub struct MavgClock {
    /// The last time given out (0: none yet).
    last: u64,
    /// How far ahead of the source time it was then (negative: behind).
    ahead: i64,
    /// Time passed (ms) not yet counted towards moving to the source (under 2^SLEW_SHIFT).
    passed: u64,
    /// The monotonic time (ms) of the last call, live.
    last_mono: Option<u64>,
}

impl MavgClock {
    /// The clock at source time `source_ms`, never before the last one given out, with the
    /// source's step (ms; negative: back) when it was a second or more (for a log line).
    /// `mono_ms`, a monotonic time (live: the system's), tells steps forward from time that
    /// passed; without it (a replay: the capture's time is all there is) only steps back are
    /// taken out.
    #[inline]
    pub fn at(&mut self, source_ms: u64, mono_ms: Option<u64>) -> (u64, Option<i64>) {
        let (t, step) = match (mono_ms, self.last_mono) {
            _ if self.last == 0 => (source_ms, 0),
            (Some(mono), Some(last_mono)) => self.follow(source_ms, mono.saturating_sub(last_mono)),
            _ => self.absorb_back(source_ms),
        };
        self.last_mono = mono_ms;
        self.ahead = t as i64 - source_ms as i64;
        self.last = t;
        (t, (step.abs() >= LOGGED_STEP_MS).then_some(step))
    }

    /// Live: moves on by the time that passed, and towards the source by at most 1/256 of it.
    fn follow(&mut self, source_ms: u64, passed: u64) -> (u64, i64) {
        let free = self.last + passed;
        // How much more than `passed` the source moved: its step.
        let step = self.ahead - (free as i64 - source_ms as i64);
        let budget = self.slew_budget(passed) as i64;
        let towards = (source_ms as i64 - free as i64).clamp(-budget, budget);
        ((free as i64 + towards) as u64, step)
    }

    /// A replay: the source's time, a step back absorbed into how far ahead this clock is,
    /// which then shrinks by 1/256 of the time that passes.
    fn absorb_back(&mut self, source_ms: u64) -> (u64, i64) {
        let t = (source_ms as i64 + self.ahead.max(0)) as u64;
        if t < self.last {
            return (self.last, t as i64 - self.last as i64);
        }
        let slew = (self.slew_budget(t - self.last) as i64).min(self.ahead.max(0));
        ((t as i64 - slew) as u64, 0)
    }

    /// How far the clock may move towards the source now that `passed` ms passed.
    fn slew_budget(&mut self, passed: u64) -> u64 {
        self.passed += passed;
        let budget = self.passed >> SLEW_SHIFT;
        self.passed &= (1 << SLEW_SHIFT) - 1;
        budget
    }

    /// The time it takes to make up a step of `step_ms` (ms).
    pub fn catch_up_ms(step_ms: i64) -> u64 {
        step_ms.unsigned_abs() << SLEW_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_time_passes_through() {
        let mut c = MavgClock::default();
        for t in [1_000, 1_000, 1_005, 60_000, 3_600_000] {
            assert_eq!(c.at(t, None), (t, None));
        }
    }

    #[test]
    fn a_step_back_is_absorbed_then_worked_off() {
        let mut c = MavgClock::default();
        assert_eq!(c.at(100_000, None).0, 100_000);
        // 20 s back: the clock stays where it was, and goes on at the source's pace less 1/256.
        assert_eq!(c.at(80_000, None), (100_000, Some(-20_000)));
        assert_eq!(c.at(80_256, None), (100_255, None));
        let mut last = 100_255;
        let mut source = 80_256;
        while source < 80_000 + 2 * 256 * 20_000 {
            source += 100;
            let (t, step) = c.at(source, None);
            assert!(t >= last && step.is_none());
            assert!(t - last <= 100);
            last = t;
        }
        // 20 s is worked off within 256 x 20 s of source time: back in step.
        assert_eq!(c.at(source + 1000, None).0, source + 1000);
    }

    #[test]
    fn live_steps_either_way_are_taken_out_and_made_up_slowly() {
        let mut c = MavgClock::default();
        // In step: the source's time itself.
        for i in 0..10 {
            assert_eq!(c.at(1_000_000 + i * 100, Some(i * 100)), (1_000_000 + i * 100, None));
        }
        // The system clock jumps 60 s ahead while 100 ms pass: the clock moves 100 ms.
        assert_eq!(c.at(1_061_000, Some(1_000)), (1_001_000, Some(60_000)));
        // Then gains on the source by 1/256 of the time that passes.
        let (t, step) = c.at(1_061_000 + 25_600, Some(1_000 + 25_600));
        assert_eq!((t, step), (1_001_000 + 25_600 + 100, None));
        // Set back 90 s (30 s behind where it was before the jump): the clock goes on.
        let (t2, step) = c.at(1_061_000 + 25_600 - 90_000 + 100, Some(1_000 + 25_700));
        assert!(t2 > t && t2 <= t + 100, "{t} -> {t2}: moving on, now towards the source behind it");
        assert_eq!(step, Some(-90_000));
    }

    #[test]
    fn jitter_is_absorbed_and_gone_quickly() {
        let mut c = MavgClock::default();
        assert_eq!(c.at(50_000, None).0, 50_000);
        assert_eq!(c.at(49_995, None), (50_000, None), "5 ms back: not logged");
        let t: Vec<u64> = (1..=20).map(|i| c.at(50_000 + i * 100, None).0).collect();
        assert_eq!(t[19], 52_000, "in step again within 2 s: {t:?}");
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }
}
