//! The per-flow path of the moving averages: a worker queues each flow matched by an object
//! in a [`Feed`] per table (its key packed and hashed, its row prefetched), and applies the
//! queue as a batch under each shard's lock: the common update of a quiet row in place, the
//! full one (limits over or active, a threshold crossed) out of line, new keys within
//! `mem-m`. Limits that start are sent to the hook thread once the locks are released.

use super::rowtable;
use super::{key_state, limit_state, over_field, set_index, Compiled, Event, Group, LimitStates, Mavg, PackedKey, Phase, Row, Shard, ShardCell, ThresholdSet, ACTIVE_BIT, FLAG_BITS, MAVG_WORDS, MAX_MEMBERS, OVER_BIT};
use crate::flow::Flow;
use crate::objects::rows::Extension;
use crate::objects::table::prefetch;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A worker's queue in front of one moving average: each flow's row is prefetched when the
/// flow arrives, and the queue is applied as a batch when full or when the clock moves on (a
/// new millisecond, before a sweep), so several rows load from memory at once and each shard
/// is locked once per batch rather than once per flow.
pub struct Feed {
    /// The moving averages of one table (see [`groups`](super::groups)), fixed for the
    /// queue's life: entries are prepared in place, and only the words and fields of this
    /// table's key are written (the rest stay zero).
    members: Vec<Arc<Mavg>>,
    /// The same: the first member, and the second if any (the per-flow path reads them).
    leader: Arc<Mavg>,
    partner: Option<Arc<Mavg>>,
    /// The table's group, for the prefetch (one dependent load fewer per flow than through
    /// the leader).
    group: Arc<Group>,
    /// When the partner is nested in the table (see [`rowtable::Nest`]): its key is the
    /// leader's with these bits added.
    extension: Option<Extension>,
    batch: [Pending; FEED_DEPTH],
    len: usize,
}

/// A limit that started on a flow: member, key, limit, field, value, threshold, time.
type StartEvent = (usize, PackedKey, usize, usize, f64, f64, u64);

/// Flows per batch.
const FEED_DEPTH: usize = 16;
/// Slots of a growing table's previous array whose keys move per flow applied (a table of a
/// million keys has moved within about 130,000 flows, a few hundred nanoseconds each).
const MOVE_SLOTS_PER_FLOW: usize = 16;

impl Feed {
    /// A queue for a group of moving averages sharing a table (as
    /// [`groups`](super::groups) returns them).
    pub fn new(members: Vec<Arc<Mavg>>) -> Feed {
        debug_assert!(!members.is_empty() && members.len() == members[0].group.members());
        let (leader, partner) = (members[0].clone(), members.get(1).cloned());
        let group = leader.group.clone();
        let extension = partner.as_ref().and_then(|p| p.layout.extension());
        debug_assert_eq!(group.nested(), extension.is_some());
        Feed { members, leader, partner, group, extension, batch: [Pending::EMPTY; FEED_DEPTH], len: 0 }
    }

    #[inline]
    pub fn push(&mut self, flow: &Flow) {
        // Prepared in place: the entry only ever held this table's flows.
        let p = &mut self.batch[self.len];
        self.leader.prepare_into(flow, flow.time_ms, p);
        if let Some(partner) = &self.partner {
            partner.values_into(flow, &mut p.v[1]);
            if let Some(extension) = &self.extension {
                p.extension = extension.bits(flow);
            }
        }
        self.group.prefetch(p);
        self.len += 1;
        if self.len == FEED_DEPTH {
            self.flush();
        }
    }

    /// Applies every waiting flow (in arrival order for each key).
    #[inline]
    pub fn flush(&mut self) {
        if self.len > 0 {
            Mavg::apply_batch(&self.members, &self.batch[..self.len]);
            self.len = 0;
        }
    }
}

impl Group {
    /// Starts loading the slot a prepared flow will update (a hint; the slot array may have
    /// moved by the time it is used, which costs nothing but the hint).
    #[inline]
    fn prefetch(&self, p: &Pending) {
        let cell = &self.cells[self.shard_of(p.hash)];
        let (base, mask) = (cell.base.load(Ordering::Relaxed), cell.mask.load(Ordering::Relaxed));
        if base != 0 {
            // Every cache line the slot spans (one for slots up to 64 bytes).
            let slot_bytes = self.slot_bytes;
            let addr = base + rowtable::home_slot(p.hash, mask, self.line_mask) * slot_bytes;
            prefetch(addr as *const u8);
            if slot_bytes > 64 {
                // Slots up to 64 bytes are aligned to their size: one line. Larger ones span
                // two or three.
                prefetch((addr + slot_bytes - 1) as *const u8);
                prefetch((addr + 64) as *const u8);
            } else {
                // And the next line: a key not in its home line is most often in the next
                // (see `rowtable::home_slot`); a miss there cost as much as the rest of the
                // update. (An array from the allocator may start mid-line: its home "line"
                // then spans two, both loaded.)
                prefetch(((addr | 63) + 1) as *const u8);
            }
        }
    }
}

/// A batch's flows of one shard, applied to the shard's table (see [`Mavg::apply_in_shard`]).
struct BatchUpdate<'a> {
    members: &'a [Arc<Mavg>],
    cell: &'a ShardCell,
    limits: &'a mut [LimitStates],
    compiled: &'a [Arc<Compiled>],
    batch: &'a [Pending],
    /// Bit i: apply `batch[i]`.
    which: u64,
    events: &'a mut Vec<StartEvent>,
}

impl rowtable::Visit for BatchUpdate<'_> {
    fn visit<S: rowtable::Slot>(self, table: &mut rowtable::RowTable<S>) {
        table.go_on_moving(MOVE_SLOTS_PER_FLOW * self.batch.len());
        let (nested, nest) = (self.members[0].group.nested(), self.members[0].group.nest);
        // Each member and its thresholds looked up once per batch, not per flow.
        let mut shard = ShardUpdate { each: each_member(self.members, self.compiled), nest, cell: self.cell, table, limits: self.limits, events: self.events };
        for (i, p) in self.batch.iter().enumerate() {
            if self.which & (1 << i) != 0 {
                if nested {
                    shard.update_nested(p);
                } else {
                    shard.update_slot(p);
                }
            }
        }
    }
}

/// A shard's table, locked, as a batch's flows update it: each member and its thresholds
/// (looked up once per batch, not per flow), the members' key states, and the limits that
/// start, for sending once the lock is released.
struct ShardUpdate<'a, S: rowtable::Slot> {
    each: [(&'a Mavg, &'a Compiled); MAX_MEMBERS],
    nest: rowtable::Nest,
    cell: &'a ShardCell,
    table: &'a mut rowtable::RowTable<S>,
    limits: &'a mut [LimitStates],
    events: &'a mut Vec<StartEvent>,
}

/// Each member of a table and its thresholds (entries past the members repeat the last one),
/// as [`Mavg::insert_row`] and the per-flow update take them.
pub(super) fn each_member<'a>(members: &'a [Arc<Mavg>], compiled: &'a [Arc<Compiled>]) -> [(&'a Mavg, &'a Compiled); MAX_MEMBERS] {
    std::array::from_fn(|m| {
        let m = m.min(members.len() - 1);
        (&*members[m], &*compiled[m])
    })
}

impl<S: rowtable::Slot> ShardUpdate<'_, S> {
    /// One flow's update of its slot, every member's row; a limit starting is added to
    /// `events`.
    #[inline(always)]
    fn update_slot(&mut self, p: &Pending) {
        let Pending { ref key, hash, now_ms, .. } = *p;
        let Some(i) = self.slot_of(0..S::MEMBERS, key, 0, hash, now_ms) else { return };
        let ShardUpdate { each, table, limits, events, .. } = self;
        // The slot type's member count is a constant: no loop is left.
        for (m, (member, thresholds)) in each.iter().enumerate().take(S::MEMBERS) {
            let values = &p.v[m];
            if !member.quiet_update(table.slot_mut(i), m, thresholds, values, now_ms) {
                member.full_update(table, (i, m), m, &mut limits[m], thresholds, key, values, now_ms, events);
            }
        }
    }

    /// One flow's update of a table with a nested member (see [`rowtable::Nest`]): the first
    /// member's row under the flow's key, and the second's under the key extended. Both keys
    /// hash alike (for the commonest values of the extra field): both probes walk one path,
    /// most often in one cache line.
    #[inline(always)]
    fn update_nested(&mut self, p: &Pending) {
        self.update_own_slot(0, 0, p.hash, p);
        self.update_own_slot(1, p.extension, self.nest.hash_extended(p.hash, p.extension), p);
    }

    /// Member `m`'s update of its slot, under the flow's key with `extension` or-ed into the
    /// last word, of hash `hash` (a table with a nested member: the slot holds its row alone).
    #[inline(always)]
    fn update_own_slot(&mut self, m: usize, extension: u64, hash: u64, p: &Pending) {
        let Some(i) = self.slot_of(m..m + 1, &p.key, extension, hash, p.now_ms) else { return };
        let (member, thresholds) = self.each[m];
        if !member.quiet_update(self.table.slot_mut(i), 0, thresholds, &p.v[m], p.now_ms) {
            member.full_update(self.table, (i, 0), m, &mut self.limits[m], thresholds, &p.key.extended(extension), &p.v[m], p.now_ms, self.events);
        }
    }

    /// The slot of `key` with `extension` or-ed into its last word (0 for the key itself),
    /// put in with a row for each of the members `slot_members` if new; `None` when `mem-m`
    /// has no room for it (see [`Mavg::insert_row`]).
    #[inline(always)]
    fn slot_of(&mut self, slot_members: std::ops::Range<usize>, key: &PackedKey, extension: u64, hash: u64, now_ms: u64) -> Option<usize> {
        match self.table.find_extended(key, extension, hash) {
            Some(i) => Some(i),
            None => Mavg::insert_row(&self.each[slot_members.clone()], self.cell, self.table, &mut self.limits[slot_members], &key.extended(extension), hash, now_ms),
        }
    }
}

/// A flow prepared for a table's moving averages: its key, hash and each member's values.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    key: PackedKey,
    hash: u64,
    v: [[f64; 3]; MAX_MEMBERS],
    now_ms: u64,
    /// For a nested member: what its key adds to the last word of `key` (see
    /// [`Extension`]).
    extension: u64,
}

impl Pending {
    const EMPTY: Pending = Pending { key: PackedKey { n: 0, w: [0; MAVG_WORDS] }, hash: 0, v: [[0.0; 3]; MAX_MEMBERS], now_ms: 0, extension: 0 };
}

impl Mavg {
    /// Adds a flow (which the object's filter matched) at `now_ms` (a moving average with a
    /// table of its own; a shared table's flows go through a [`Feed`]).
    #[inline]
    pub fn update(self: &Arc<Self>, flow: &Flow, now_ms: u64) {
        debug_assert!(!self.shares_table());
        let p = self.prepare(flow, now_ms);
        Mavg::apply_batch(std::slice::from_ref(self), std::slice::from_ref(&p));
    }

    /// Packs a flow's key and values (no lock, no memory of the table touched).
    #[inline]
    pub fn prepare(&self, flow: &Flow, now_ms: u64) -> Pending {
        let mut p = Pending::EMPTY;
        self.prepare_into(flow, now_ms, &mut p);
        p
    }

    /// [`Mavg::prepare`] into a pending entry last prepared by this moving average (or
    /// empty): the words and values past this average's key and fields are left as they are,
    /// zero.
    #[inline]
    fn prepare_into(&self, flow: &Flow, now_ms: u64, p: &mut Pending) {
        p.key.n = self.layout.words as u8;
        self.layout.pack(flow, &mut p.key.w);
        self.values_into(flow, &mut p.v[0]);
        p.hash = p.key.hash64();
        p.now_ms = now_ms;
    }

    /// A flow's values of this average's fields.
    #[inline]
    fn values_into(&self, flow: &Flow, v: &mut [f64; 3]) {
        for (x, a) in v.iter_mut().zip(&self.aggs) {
            // Counters are far below 2^63: clamped there, the signed conversion serves (it
            // is cheaper than the unsigned one).
            *x = a.of(flow).min(i64::MAX as u64) as i64 as f64;
        }
    }

    /// Updates the averages of a table's members (as [`groups`](super::groups) returns them)
    /// with prepared flows, locking each shard once: flows are taken shard by shard, in
    /// arrival order within a shard (so within a key). Events are sent after the locks are
    /// released.
    pub fn apply_batch(members: &[Arc<Mavg>], batch: &[Pending]) {
        let leader = &members[0];
        let mut events: Vec<StartEvent> = Vec::new();
        debug_assert!(!batch.is_empty() && batch.len() <= 64);
        let all = u64::MAX >> (64 - batch.len());
        if leader.group.shard_mask == 0 {
            // One shard (one worker): nothing to group.
            Mavg::apply_in_shard(members, 0, batch, all, &mut events);
        } else {
            let mut left = all; // bit i: batch[i] not applied yet
            while left != 0 {
                let shard_no = leader.group.shard_of(batch[left.trailing_zeros() as usize].hash);
                let same = batch.iter().enumerate().filter(|(_, p)| leader.group.shard_of(p.hash) == shard_no);
                let mine = same.fold(0u64, |m, (i, _)| m | 1 << i) & left;
                Mavg::apply_in_shard(members, shard_no, batch, mine, &mut events);
                left &= !mine;
            }
        }
        Mavg::emit_starts(members, events);
    }

    /// Applies the flows of `batch` selected by `which` (bit i: `batch[i]`), all of shard
    /// `shard_no`, under its lock, with the shard's slot type known (one dispatch per batch,
    /// not one per row access).
    fn apply_in_shard(members: &[Arc<Mavg>], shard_no: usize, batch: &[Pending], which: u64, events: &mut Vec<StartEvent>) {
        let group = &members[0].group;
        let cell = &group.cells[shard_no];
        let mut guard = cell.shard.lock();
        if let Some(next) = group.successor.get() {
            // A reload moved the rows (read under the lock: the move holds it): the flows go
            // where they are, and so do the limits they start.
            drop(guard);
            let mut started = Vec::new();
            Mavg::apply_in_shard(next, shard_no, batch, which, &mut started);
            Mavg::emit_starts(next, started);
            return;
        }
        let Shard { rows, limits, compiled } = &mut *guard;
        rows.visit(BatchUpdate { members, cell, limits, compiled, batch, which, events });
    }

    /// The common update in place of this member's row (row `r` of the slot) with a flow's
    /// `values` at `now_ms`: it has no limit active or over, and stays under every overlimit.
    /// Returns false, the slot untouched, when that is not so.
    #[inline(always)]
    fn quiet_update<S: rowtable::Slot>(&self, slot: &mut S, r: usize, compiled: &Compiled, values: &[f64; 3], now_ms: u64) -> bool {
        let (sums, last, thr) = slot.parts_mut(r);
        if *thr & FLAG_BITS != 0 {
            return false;
        }
        let ahead = rowtable::ms_ahead(*last, now_ms);
        let dt = if ahead < 0 { -(ahead as i64) as u64 } else { 0 };
        let mut n = [0.0; 3];
        for ((n, sum), v) in n.iter_mut().zip(sums.iter()).zip(values).take(S::SUMS) {
            *n = self.step(*sum, *v, dt);
        }
        let quiet = &compiled.quiet[set_index(*thr)];
        if over_field(&n, quiet, S::SUMS).is_some() {
            return false;
        }
        sums.copy_from_slice(&n[..S::SUMS]);
        if ahead < 0 {
            *last = now_ms as u32;
        }
        true
    }

    /// The update of this member's row (member `m`, row `r` of slot `i`) with a flow's
    /// `values` when it has a limit active or over, or crosses one now.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn full_update<S: rowtable::Slot>(
        &self,
        table: &mut rowtable::RowTable<S>,
        (i, r): (usize, usize),
        m: usize,
        limits: &mut LimitStates,
        compiled: &Compiled,
        key: &PackedKey,
        v: &[f64; 3],
        now_ms: u64,
        events: &mut Vec<StartEvent>,
    ) {
        let mut row = table.load(i, r, now_ms);
        let set = &compiled.sets[row.thr()];
        let (before_n, before_ms) = (row.n, row.last_ms);
        let dt = now_ms.saturating_sub(row.last_ms);
        for (n, v) in row.n.iter_mut().zip(v.iter()).take(S::SUMS) {
            *n = self.step(*n, *v, dt);
        }
        row.last_ms = row.last_ms.max(now_ms);
        let mut over = self.over_mask; // underlimits are found by the sweep
        while over != 0 {
            let l = over.trailing_zeros() as usize;
            over &= over - 1;
            match over_field(&row.n, &set.sum[l], S::SUMS) {
                // Still over: the flag says so; the key's limit state is not touched per flow.
                Some(_) if row.active(l) => row.set_flag(OVER_BIT, l, true),
                Some(field) => self.start_over(m, &mut row, limits, key, l, field, set, now_ms, events),
                // Just dropped under: record when it was last over, and by how much.
                None if row.flag(OVER_BIT, l) => self.record_over(&mut row, limits, key, l, &before_n, before_ms, set),
                None => {}
            }
        }
        table.store(i, r, &row);
    }

    /// A new key's rows (one per member of the slot, `members` with their thresholds and
    /// `limits` their key states), unless the memory bound is reached (then the flow, or the
    /// listed key, is counted and skipped); publishes the slot array's address for prefetching
    /// (it may have grown). The members of a slot hold the same keys (see [`share_tables`])
    /// and key states of their own: a key goes in when every one has room. A member with an
    /// underlimit notes when the key came in, its first flow or its listing (see
    /// [`Mavg::fill`]).
    #[cold]
    pub(super) fn insert_row<S: rowtable::Slot>(
        members: &[(&Mavg, &Compiled)],
        cell: &ShardCell,
        table: &mut rowtable::RowTable<S>,
        limits: &mut [LimitStates],
        key: &PackedKey,
        hash: u64,
        now_ms: u64,
    ) -> Option<usize> {
        debug_assert_eq!(members.len(), S::MEMBERS);
        if !members.iter().all(|(member, _)| member.has_room_for_key()) {
            for (member, _) in members {
                member.stats.keys_dropped.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        Mavg::count_new_key(members.iter().map(|(member, _)| *member));
        for ((member, _), limits) in members.iter().zip(limits.iter_mut()) {
            if member.has_underlimit() {
                key_state(limits, key, &member.states).first_ms = now_ms.max(1);
            }
        }
        let rows: [Row; MAX_MEMBERS] = std::array::from_fn(|m| match members.get(m) {
            Some((member, thresholds)) => Row { last_ms: now_ms, n: [0.0; 3], thr: thresholds.index_of(key) | member.filling_bits(now_ms) },
            None => Row::default(),
        });
        let i = table.insert(key, hash, &rows[..S::MEMBERS]);
        cell.publish(table.probe_start());
        Some(i)
    }

    /// Sends the limits that started in a batch (after its locks are released).
    fn emit_starts(members: &[Arc<Mavg>], events: Vec<StartEvent>) {
        for (m, key, l, field, value, threshold, now_ms) in events {
            let member = &members[m];
            member.activate(l, true);
            let keys = member.key_text(&key);
            member.emit(Event { phase: Phase::Start, mavg: member.clone(), limit: l, keys, field, value, threshold, time_ms: now_ms, start_ms: now_ms });
        }
    }

    /// Overlimit `l` starts for the key of `row` (member `m`'s, over on `field`) at `now_ms`:
    /// its state is made and the start queued in `events`. Out of line: rare, and the per-flow
    /// loop keeps its registers.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn start_over(&self, m: usize, row: &mut Row, limits: &mut LimitStates, key: &PackedKey, l: usize, field: usize, set: &ThresholdSet, now_ms: u64, events: &mut Vec<StartEvent>) {
        let (value, threshold) = self.verdict(&row.n, set, l, field);
        let st = limit_state(limits, key, l, &self.states);
        st.last_bad_ms = now_ms;
        (st.field, st.value, st.threshold) = (field, value, threshold);
        st.start_ms = now_ms;
        st.last_notify_ms = now_ms;
        row.set_flag(ACTIVE_BIT, l, true);
        row.set_flag(OVER_BIT, l, true);
        events.push((m, *key, l, field, value, threshold, now_ms));
    }
}
