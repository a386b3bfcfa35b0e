//! Work waiting in lanes that take turns, so that a storm in one lane waits behind itself,
//! not in front of another lane's work: hook scripts by limit (a scan starting an alert per
//! host, thousands at once, does not delay a flood's script against a customer), Lua calls by
//! object.
//!
//! Each lane holds its work in arrival order, and behind it, once it holds `per_lane` items,
//! events not handled yet (parked), in arrival order too. A lane's order is kept (an alert's
//! action and back2norm scripts still alternate, an object's Lua hooks run in event order);
//! lanes with work take turns, one item each.

use std::collections::{HashMap, VecDeque};

/// The lanes: work `S` and parked events `E`, by lane name.
pub struct Turns<S, E> {
    lanes: HashMap<String, Lane<S, E>>,
    /// The lanes with work waiting, in the order of their next turn (a lane is here exactly
    /// while it has work).
    turn: VecDeque<String>,
    queued: usize,
    parked: usize,
    per_lane: usize,
}

struct Lane<S, E> {
    work: VecDeque<S>,
    parked: VecDeque<E>,
}

impl<S, E> Lane<S, E> {
    fn new() -> Lane<S, E> {
        Lane { work: VecDeque::new(), parked: VecDeque::new() }
    }
}

impl<S, E> Turns<S, E> {
    /// Lanes of at most `per_lane` items of work each (at least one).
    pub fn new(per_lane: usize) -> Turns<S, E> {
        Turns { lanes: HashMap::new(), turn: VecDeque::new(), queued: 0, parked: 0, per_lane: per_lane.max(1) }
    }

    /// Work waiting, in all lanes.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Events parked, in all lanes.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Whether an event of `lane` must be parked rather than handled now: its lane holds
    /// `per_lane` items, or events parked before it.
    pub fn must_park(&self, lane: &str) -> bool {
        self.lanes.get(lane).is_some_and(|l| !l.parked.is_empty() || l.work.len() >= self.per_lane)
    }

    /// Parks an event of `lane` behind its others.
    pub fn park(&mut self, lane: &str, ev: E) {
        self.lane_mut(lane).parked.push_back(ev);
        self.parked += 1;
    }

    /// Queues work in `lane`; false (and nothing queued) when the lane is full, which
    /// [`Turns::must_park`] prevents.
    pub fn push(&mut self, lane: &str, item: S) -> bool {
        let per_lane = self.per_lane;
        let l = self.lane_mut(lane);
        if l.work.len() >= per_lane {
            return false;
        }
        l.work.push_back(item);
        if l.work.len() == 1 {
            self.turn.push_back(lane.to_string());
        }
        self.queued += 1;
        true
    }

    /// The next item, of the lane whose turn it is, with that lane's name (whose parked
    /// events may now have room: see [`Turns::unpark`]).
    pub fn pop(&mut self) -> Option<(S, String)> {
        self.pop_first(|_| true)
    }

    /// [`Turns::pop`] of the first lane in turn that `may` lets through (those before it keep
    /// their turn).
    pub fn pop_first(&mut self, may: impl Fn(&str) -> bool) -> Option<(S, String)> {
        let at = self.turn.iter().position(|name| may(name))?;
        let name = self.turn.remove(at).expect("a position found in turn");
        let lane = self.lanes.get_mut(&name).expect("a lane in turn exists");
        let item = lane.work.pop_front().expect("a lane in turn has work");
        self.queued -= 1;
        if !lane.work.is_empty() {
            self.turn.push_back(name.clone());
        }
        Some((item, name))
    }

    /// The oldest event parked in `lane`, if its lane has room again.
    pub fn unpark(&mut self, lane: &str) -> Option<E> {
        let per_lane = self.per_lane;
        let l = self.lanes.get_mut(lane)?;
        if l.work.len() >= per_lane {
            return None;
        }
        let ev = l.parked.pop_front()?;
        self.parked -= 1;
        Some(ev)
    }

    /// The oldest item of each lane with work, with the lane's name and its number of items.
    pub fn fronts(&self) -> impl Iterator<Item = (&str, &S, usize)> {
        self.turn.iter().map(|name| {
            let lane = &self.lanes[name];
            (name.as_str(), lane.work.front().expect("a lane in turn has work"), lane.work.len())
        })
    }

    /// Takes all work and every parked event out (a stop leaving them), lane by lane (lanes
    /// in no particular order, each lane's items in its order).
    pub fn drain(&mut self) -> (Vec<S>, Vec<E>) {
        self.turn.clear();
        (self.queued, self.parked) = (0, 0);
        let (mut work, mut parked) = (Vec::new(), Vec::new());
        for lane in self.lanes.values_mut() {
            work.extend(lane.work.drain(..));
            parked.extend(lane.parked.drain(..));
        }
        (work, parked)
    }

    fn lane_mut(&mut self, lane: &str) -> &mut Lane<S, E> {
        // Lanes are kept once made: one per limit or object of the configuration.
        if !self.lanes.contains_key(lane) {
            self.lanes.insert(lane.to_string(), Lane::new());
        }
        self.lanes.get_mut(lane).expect("just made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts of `turns` in the order they are taken, parked events unparked as their lane
    /// makes room (each becoming a script of its lane).
    fn run_all(turns: &mut Turns<String, String>) -> Vec<String> {
        let mut order = Vec::new();
        while let Some((script, lane)) = turns.pop() {
            order.push(script);
            while let Some(ev) = turns.unpark(&lane) {
                assert!(turns.push(&lane, ev));
            }
        }
        order
    }

    #[test]
    fn lanes_take_turns_and_each_keeps_its_order() {
        let mut t = Turns::new(100);
        for k in 0..5 {
            assert!(t.push("scan", format!("scan{k}")));
        }
        t.push("flood", "flood0".into());
        t.push("flood", "flood1".into());
        assert_eq!(t.queued(), 7);
        assert_eq!(run_all(&mut t), ["scan0", "flood0", "scan1", "flood1", "scan2", "scan3", "scan4"]);
        assert_eq!(t.queued(), 0);
    }

    #[test]
    fn a_full_lane_parks_its_events_in_order_and_takes_them_as_it_drains() {
        let mut t = Turns::new(2);
        for k in 0..6 {
            let ev = format!("scan{k}");
            if t.must_park("scan") {
                t.park("scan", ev);
            } else {
                assert!(t.push("scan", ev));
            }
        }
        assert_eq!((t.queued(), t.parked()), (2, 4));
        assert!(!t.push("scan", "over".into()), "a full lane takes no script");
        // Another lane is not held up.
        assert!(!t.must_park("flood"));
        t.push("flood", "flood0".into());
        assert_eq!(run_all(&mut t), ["scan0", "flood0", "scan1", "scan2", "scan3", "scan4", "scan5"]);
        assert_eq!((t.queued(), t.parked()), (0, 0));
        assert!(!t.must_park("scan"));
    }

    #[test]
    fn a_lane_passed_over_keeps_its_turn() {
        let mut t: Turns<String, String> = Turns::new(10);
        for (lane, item) in [("a", "a0"), ("a", "a1"), ("b", "b0"), ("c", "c0")] {
            t.push(lane, item.into());
        }
        assert_eq!(t.pop_first(|lane| lane != "a").unwrap(), ("b0".into(), "b".into()));
        assert!(t.pop_first(|lane| lane == "x").is_none());
        assert_eq!(run_all(&mut t), ["a0", "c0", "a1"]);
    }

    #[test]
    fn fronts_are_each_lanes_oldest() {
        let mut t: Turns<String, ()> = Turns::new(10);
        for (lane, item) in [("a", "a0"), ("b", "b0"), ("a", "a1")] {
            t.push(lane, item.into());
        }
        let fronts: Vec<(&str, &String, usize)> = t.fronts().collect();
        assert_eq!(fronts, [("a", &"a0".to_string(), 2), ("b", &"b0".to_string(), 1)]);
        t.pop();
        assert_eq!(t.fronts().map(|(l, s, n)| (l.to_string(), s.clone(), n)).collect::<Vec<_>>(), [("b".into(), "b0".into(), 1), ("a".into(), "a1".into(), 1)]);
    }

    #[test]
    fn random_arrivals_keep_each_lanes_order_and_no_lane_waits_two_turns() {
        // Events (lane, sequence number) arrive in a random order among five lanes of at most
        // three items, parked when a lane is full, and are taken at random moments, as the
        // hook thread does; a fixed seed keeps the run the same.
        let mut next = crate::testrand::xorshift(0x2545_f491_4f6c_dd1d);
        let mut t: Turns<(usize, u32), (usize, u32)> = Turns::new(3);
        let (mut sent, mut taken) = ([0u32; 5], [0u32; 5]);
        // Per lane with work: the pops since it last had one (at most the other lanes').
        let mut waited = [0usize; 5];
        for step in 0..20_000 {
            if step < 15_000 && next(3) > 0 {
                let lane = next(5) as usize;
                let (name, item) = (lane.to_string(), (lane, sent[lane]));
                sent[lane] += 1;
                if t.must_park(&name) {
                    t.park(&name, item);
                } else {
                    assert!(t.push(&name, item));
                }
            } else if let Some(((lane, k), name)) = t.pop() {
                assert_eq!(k, taken[lane], "lane {lane} in order");
                taken[lane] += 1;
                waited[lane] = 0;
                for (other, w) in waited.iter_mut().enumerate() {
                    if other != lane && t.lanes.get(&other.to_string()).is_some_and(|l| !l.work.is_empty()) {
                        *w += 1;
                        assert!(*w <= 4, "lane {other} waited {w} pops with work");
                    }
                }
                while let Some(item) = t.unpark(&name) {
                    assert!(t.push(&name, item));
                }
            }
            let (work, parked): (usize, usize) = t.lanes.values().fold((0, 0), |(w, p), l| (w + l.work.len(), p + l.parked.len()));
            assert_eq!((t.queued(), t.parked()), (work, parked));
            assert!(t.lanes.values().all(|l| l.work.len() <= 3 && (l.parked.is_empty() || l.work.len() == 3)));
        }
        while let Some(((lane, k), name)) = t.pop() {
            assert_eq!(k, taken[lane]);
            taken[lane] += 1;
            while let Some(item) = t.unpark(&name) {
                assert!(t.push(&name, item));
            }
        }
        assert_eq!(taken, sent, "everything sent was taken");
        assert_eq!((t.queued(), t.parked()), (0, 0));
    }

    #[test]
    fn drain_takes_everything_out() {
        let mut t = Turns::new(1);
        t.push("a", "a0".into());
        t.park("a", "a1".into());
        t.push("b", "b0".into());
        let (mut scripts, parked) = t.drain();
        scripts.sort();
        assert_eq!((scripts, parked), (vec!["a0".to_string(), "b0".into()], vec!["a1".to_string()]));
        assert_eq!((t.queued(), t.parked()), (0, 0));
        assert!(t.pop().is_none());
        assert!(!t.must_park("a"));
    }
}
