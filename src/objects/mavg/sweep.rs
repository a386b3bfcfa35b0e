//! The once-per-second pass over a moving average's table, and its dumps: idle rows decay,
//! back-to-normal and underlimits are found (no flow can report traffic that stopped), keys
//! listed for underlimits that no flow brought are put in,
//! notification files are kept fresh, idle keys are forgotten, the `.dump` / `.adump`
//! files are asked for, and a full `mem-m` is warned of. Apart from the per-flow path (the
//! parent module): it runs under each shard's lock once a second, never per flow.

use super::*;

/// How long an object must have had traffic before the keys listed for its underlimits that
/// no flow brought are watched (see [`Mavg::watch_listed`]): exporters send their templates
/// and long flows within a minute.
const LISTED_AFTER_MS: u64 = 60_000;

/// One pass of the once-per-second sweep over a table's members (as [`groups`] returns
/// them): decays idle rows, finds back-to-normal and underlimits, rewrites notifications,
/// forgets keys idle and holding no limit in any member, and at its end asks for the dumps.
/// It may be done in pieces ([`SweepPass::step`]), each under the shard's lock, so a worker
/// sweeping a table of millions of keys never stops receiving for long.
///
/// Most rows of a big table are quiet: no limit active, none over at the last update. For
/// a moving average with overlimits only, such a row was under every threshold then and has
/// only decayed since, so the sweep has nothing to find in it and only decides whether the key
/// is kept (`quiet_row_kept`). After the thresholds changed (reload), one pass looks at every
/// row, as a lowered threshold may have put a quiet row over.
pub struct SweepPass {
    members: Vec<Arc<Mavg>>,
    /// Per member: how long an idle key is kept (see [`Mavg::forget_after`]).
    forget: Vec<Option<u64>>,
    /// Per member: the same, when quiet rows need no more look than that (overlimits only,
    /// thresholds unchanged since the last pass).
    skip_quiet: Vec<Option<u64>>,
    /// Where the pass goes on: shard, then slot.
    shard: usize,
    slot: usize,
    /// Its first step was taken (see [`Mavg::watch_listed`]).
    begun: bool,
}

impl SweepPass {
    pub fn new(members: &[Arc<Mavg>]) -> SweepPass {
        for member in members {
            member.send_held();
            member.log_keys_dropped();
        }
        let forget: Vec<Option<u64>> = members.iter().map(|m| m.forget_after()).collect();
        let skip_quiet = members.iter().zip(&forget).map(|(m, f)| f.filter(|_| !m.thresholds_changed.swap(false, Ordering::Relaxed))).collect();
        SweepPass { members: members.to_vec(), forget, skip_quiet, shard: 0, slot: 0, begun: false }
    }

    /// Sweeps at `now_ms` until the pass is complete (returns true) or `budget` slots were
    /// looked at (taken off `budget`); events are sent after each shard's lock is released.
    pub fn step(&mut self, now_ms: u64, budget: &mut usize) -> bool {
        if !self.begun {
            self.begun = true;
            Mavg::watch_listed(&self.members, now_ms);
        }
        let cells = &self.members[0].group.cells;
        while self.shard < cells.len() && *budget > 0 {
            let mut out: Vec<Vec<SweepEvent>> = self.members.iter().map(|_| Vec::new()).collect();
            let (looked, shard_done) = {
                let mut guard = cells[self.shard].shard.lock();
                let Shard { rows, limits, compiled } = &mut *guard;
                let (members, forget, skip_quiet) = (&self.members, &self.forget, &self.skip_quiet);
                rows.retain(self.slot, *budget, now_ms, |key, first, rows| {
                    let mut keep = false;
                    let slot_members = first..first + rows.len();
                    for (m, row) in slot_members.clone().zip(rows.iter_mut()) {
                        keep |= match skip_quiet[m] {
                            Some(forget_after) if row.thr & FLAG_BITS == 0 => quiet_row_kept(row, now_ms, forget_after),
                            _ => members[m].sweep_row(key, row, &mut limits[m], &compiled[m].sets, now_ms, forget[m], &mut out[m]),
                        };
                    }
                    if !keep {
                        for member in &members[slot_members] {
                            member.stats.keys.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    keep
                })
            };
            for (member, out) in self.members.iter().zip(out) {
                member.emit_sweep(out, now_ms);
            }
            // An empty shard counts as a slot.
            *budget = budget.saturating_sub(looked.max(1));
            (self.shard, self.slot) = if shard_done { (self.shard + 1, 0) } else { (self.shard, self.slot + looked) };
        }
        let done = self.shard == cells.len();
        if done {
            for member in &self.members {
                member.dump_if_due(now_ms);
            }
        }
        done
    }
}

impl Mavg {
    /// The once-per-second pass (of a moving average with a table of its own; see
    /// [`Mavg::sweep_group`]).
    pub fn sweep(self: &Arc<Self>, now_ms: u64) {
        debug_assert!(!self.shares_table());
        Mavg::sweep_group(std::slice::from_ref(self), now_ms);
    }

    /// The once-per-second pass over a table's members (as [`groups`] returns them), all at
    /// once (see [`SweepPass`] for one in pieces).
    pub fn sweep_group(members: &[Arc<Mavg>], now_ms: u64) {
        let mut unbounded = usize::MAX;
        SweepPass::new(members).step(now_ms, &mut unbounded);
    }

    /// Puts the keys listed for the underlimits of a table's members (as [`groups`] returns
    /// them) in their `limits` files that no flow has brought into the table (a listed host
    /// silent since the start, or added by a reload): the sweep watches only the keys in the
    /// table, and these have no traffic to say they fell silent. Only once the object has had
    /// traffic for [`LISTED_AFTER_MS`] (or a window, if longer), so that a collector that has
    /// just started, or whose exporters have not sent their templates yet, takes no listed
    /// key for silent; a key added by a reload after that is watched at once. A key goes in
    /// with an average of 0 that starts filling then (see [`Mavg::fill`]): its underlimit
    /// starts at the next sweep unless its traffic comes first. Keys beyond `mem-m` are counted
    /// as dropped, as new keys of flows are.
    fn watch_listed(members: &[Arc<Mavg>], now_ms: u64) {
        for member in members {
            member.note_traffic(now_ms);
        }
        let due: Vec<&Arc<Mavg>> = members.iter().filter(|m| m.listed_due(now_ms)).collect();
        if due.is_empty() || members[0].group.successor.get().is_some() {
            return;
        }
        let mut keys: Vec<PackedKey> = Vec::new();
        for member in due {
            member.listed_pending.store(false, Ordering::Relaxed);
            keys.extend(member.listed_keys());
        }
        keys.sort_unstable_by_key(|k| k.w);
        keys.dedup_by_key(|k| k.w);
        let added = keys.iter().filter(|key| Mavg::put_listed(members, key, now_ms)).count();
        if added > 0 {
            let m = &members[0];
            crate::log::info(&format!("{}/{}: {added} keys listed for underlimits and not seen since traffic began are watched from now", m.object, m.name));
        }
    }

    /// Notes when a sweep first finds a key in the table (see [`Mavg::traffic_since_ms`]).
    fn note_traffic(&self, now_ms: u64) {
        if self.traffic_since_ms.load(Ordering::Relaxed) == 0 && self.stats.keys.load(Ordering::Relaxed) > 0 {
            self.traffic_since_ms.store(now_ms.max(1), Ordering::Relaxed);
        }
    }

    /// Whether the keys listed for this average's underlimits are to be put in now (see
    /// [`Mavg::watch_listed`]).
    fn listed_due(&self, now_ms: u64) -> bool {
        let since = self.traffic_since_ms.load(Ordering::Relaxed);
        self.has_underlimit() && since != 0 && now_ms >= since + LISTED_AFTER_MS.max(self.time_ms) && self.listed_pending.load(Ordering::Relaxed)
    }

    /// The keys the `limits` files of this average's underlimits list with a threshold an
    /// average of 0 is under (a threshold of 0, or `inf` alone, watches nothing).
    fn listed_keys(&self) -> Vec<PackedKey> {
        let thresholds = self.thresholds.read();
        let unders = self.limits.iter().zip(&thresholds.per_limit).filter(|(spec, _)| spec.kind == LimitKind::Under);
        unders.flat_map(|(_, by_key)| by_key.iter().filter(|(_, t)| t.iter().any(|t| t.is_finite() && *t > 0.0)).map(|(k, _)| *k)).collect()
    }

    /// Puts a listed key in its shard's table unless it is there, as a flow's new key is
    /// (see [`Mavg::watch_listed`]); returns whether it was put in.
    fn put_listed(members: &[Arc<Mavg>], key: &PackedKey, now_ms: u64) -> bool {
        let group = &members[0].group;
        let hash = group.nest.hash_of(key);
        let cell = &group.cells[group.shard_of(hash)];
        let mut shard = cell.shard.lock();
        let Shard { rows, limits, compiled } = &mut *shard;
        let mut put = false;
        rows.visit(PutListed { members, cell, limits, compiled, key, hash, now_ms, put: &mut put });
        put
    }

    /// How long a key idle and holding no limit is kept: 10 windows, at least a minute, and
    /// within the age a row's 32-bit time keeps (else rows of a huge `time` would never go);
    /// `None`, for ever, when an underlimit watches for traffic that stopped.
    fn forget_after(&self) -> Option<u64> {
        (!self.has_underlimit()).then(|| self.time_ms.saturating_mul(10).clamp(60_000, rowtable::MAX_AGE))
    }

    /// The sweep of one key's row: events go to `out`; returns whether this moving average
    /// keeps the key (a limit holds, or it was not idle for `forget_after`, see
    /// [`Mavg::forget_after`]).
    #[allow(clippy::too_many_arguments)]
    fn sweep_row(&self, key: &PackedKey, row: &mut Row, limits: &mut LimitStates, sets: &[ThresholdSet], now_ms: u64, forget_after: Option<u64>, out: &mut Vec<SweepEvent>) -> bool {
        let dt = now_ms.saturating_sub(row.last_ms);
        let mut n = row.n;
        for x in n.iter_mut().take(self.aggs.len()) {
            *x = self.decayed(*x, dt);
        }
        let set = &sets[row.thr()];
        // Most rows of a big table have no state: no lookup for them.
        let had_state = row.may_have_state();
        let fill = if row.thr & FILLING == 0 { Some(1.0) } else { self.fill(row, limits, key, &n, set, now_ms) };
        for (l, spec) in self.limits.iter().enumerate() {
            if row.flag(OVER_BIT, l) {
                let (at, last) = (row.n, row.last_ms);
                self.record_over(row, limits, key, l, &at, last, set);
            }
            let side = match spec.kind {
                LimitKind::Over => self.over(&n, set, l),
                LimitKind::Under => self.under_filled(&n, fill, set, l),
            };
            if side.is_none() && !row.active(l) {
                continue; // nothing holds and nothing starts: no state needed
            }
            let active = row.active(l);
            let st = limit_state(limits, key, l, &self.states);
            if let Some((field, value, threshold)) = side {
                st.last_bad_ms = now_ms;
                (st.field, st.value, st.threshold) = (field, value, threshold);
                if !active {
                    st.start_ms = now_ms;
                    st.last_notify_ms = now_ms;
                    out.push((*key, l, Phase::Start, field, value, threshold, now_ms));
                }
            }
            if now_ms.saturating_sub(st.last_bad_ms) >= spec.back2norm_ms && side.is_none() {
                let value = n[st.field] / self.secs();
                out.push((*key, l, Phase::Back2Norm, st.field, value, st.threshold, st.start_ms));
                row.set_flag(ACTIVE_BIT, l, false);
            } else {
                if active && now_ms.saturating_sub(st.last_notify_ms) >= NOTIFY_EVERY_MS {
                    st.last_notify_ms = now_ms;
                    out.push((*key, l, Phase::Update, st.field, st.value, st.threshold, st.start_ms));
                }
                row.set_flag(ACTIVE_BIT, l, true);
            }
        }
        let any_active = row.any_active();
        if had_state && !any_active && fill == Some(1.0) {
            remove_state(limits, key, &self.states);
        }
        any_active || forget_after.is_none_or(|t| dt < t)
    }

    /// Sends a sweep's events (after the locks are released).
    fn emit_sweep(self: &Arc<Self>, out: Vec<SweepEvent>, now_ms: u64) {
        for (key, l, phase, field, value, threshold, start) in out {
            match phase {
                Phase::Start => self.activate(l, true),
                Phase::Back2Norm => self.activate(l, false),
                Phase::Update | Phase::Dump { .. } => {}
            }
            let keys = self.key_text(&key);
            self.emit(Event { phase, mavg: self.clone(), limit: l, keys, field, value, threshold, time_ms: now_ms, start_ms: start });
        }
    }

    /// Every `dump` seconds: when `<mavg>.d` (rewrite `<mavg>.dump`) or `<mavg>.a` (append to
    /// `<mavg>.adump`) exists in the object directory, asks the hook thread to write them.
    fn dump_if_due(self: &Arc<Self>, now_ms: u64) {
        let Some(every) = self.dump else { return };
        if now_ms < self.next_dump_ms.load(Ordering::Relaxed) {
            return;
        }
        self.next_dump_ms.store(now_ms + every * 1000, Ordering::Relaxed);
        let rewrite = self.dir.join(format!("{}.d", self.name)).exists();
        let append = self.dir.join(format!("{}.a", self.name)).exists();
        if rewrite || append {
            let phase = Phase::Dump { rewrite, append };
            let mavg = self.clone();
            self.emit(Event { phase, mavg, limit: 0, keys: Vec::new(), field: 0, value: 0.0, threshold: 0.0, time_ms: now_ms, start_ms: now_ms });
        }
    }

    /// Key values as text: addresses as addresses, numbers in decimal, NULL as `NULL`.
    pub fn key_text(&self, key: &PackedKey) -> Vec<String> {
        (0..self.keys.len())
            .map(|i| match self.layout.value(&key.w, i) {
                None => "NULL".into(),
                Some(v) => format_value(self.keys[i], v),
            })
            .collect()
    }

    /// The `.dump` text: time line, memory line, one line per key with a non-zero rate.
    pub fn dump_text(&self, now_ms: u64, time_line: &str) -> String {
        let used = self.memory_bytes();
        let mut s = format!(
            "{time_line}\nmem used/avail: {}M/{}M ({}/{} bytes)\n",
            used >> 20,
            self.mem_bytes >> 20,
            used,
            self.mem_bytes
        );
        let secs = self.secs();
        for cell in &self.group.cells {
            // Copied out under the lock, formatted after: a shard may hold every row, and
            // the workers wait for its lock.
            let (rows, sets) = {
                let shard = cell.shard.lock();
                let mut rows: Vec<(PackedKey, u64, f64, usize)> = Vec::new();
                shard.rows.for_each(now_ms, self.member, |k, r| rows.push((k, r.last_ms, r.n[0], r.thr())));
                (rows, shard.compiled[self.member].clone())
            };
            for (key, last_ms, n, thr) in rows {
                let dt = now_ms.saturating_sub(last_ms);
                let n0 = self.decayed(n, dt);
                let rate = (n0 / secs).round() as u64;
                if rate == 0 {
                    continue;
                }
                for (i, k) in self.key_text(&key).iter().enumerate() {
                    let quoted = matches!(self.keys[i].def().kind, Kind::Ipv4 | Kind::Ipv6 | Kind::Addr | Kind::Mac);
                    if quoted {
                        s.push_str(&format!(" '{k}' "));
                    } else {
                        s.push_str(&format!(" {k} "));
                    }
                }
                s.push_str(&format!(" :: {rate} ("));
                for t in sets.sets[thr].rate.iter().take(self.limits.len()) {
                    s.push_str(&format!("{} ", t[0] as u64));
                }
                s.push_str(")\n");
            }
        }
        s
    }
}

/// A listed key put in a shard's table unless it is there (see [`Mavg::put_listed`]).
struct PutListed<'a> {
    members: &'a [Arc<Mavg>],
    cell: &'a ShardCell,
    limits: &'a mut [LimitStates],
    compiled: &'a [Arc<Compiled>],
    key: &'a PackedKey,
    hash: u64,
    now_ms: u64,
    put: &'a mut bool,
}

impl rowtable::Visit for PutListed<'_> {
    fn visit<S: rowtable::Slot>(self, table: &mut rowtable::RowTable<S>) {
        if table.find(self.key, self.hash).is_none() {
            let each = feed::each_member(self.members, self.compiled);
            let slot_members = self.members[0].group.slot_members(self.key);
            let (members, limits) = (&each[slot_members.clone()], &mut self.limits[slot_members]);
            *self.put = Mavg::insert_row(members, self.cell, table, limits, self.key, self.hash, self.now_ms).is_some();
        }
    }
}

/// Whether a quiet row's key is kept (see [`Mavg::sweep_group`]): it holds no limit and no
/// limit state, so only its idle time decides, as in [`Mavg::sweep_row`].
#[inline]
fn quiet_row_kept(row: &Row, now_ms: u64, forget_after: u64) -> bool {
    now_ms.saturating_sub(row.last_ms) < forget_after
}
