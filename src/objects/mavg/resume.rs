//! Alerts that were active when the collector last stopped, taken up again at start from their
//! notification files.
//!
//! A stop (an upgrade, a restart, a crash) leaves the notification files of active alerts in
//! place, and what their action scripts started (a blackhole route, a filter) stays on. A run
//! that knew nothing of them would never run their back-to-normal scripts unless the keys went
//! over and back again, and an attack still going on would run the action scripts a second
//! time. So at start each notification file of a configured limit is read back (key values,
//! rate, threshold, as the hook thread wrote them) and the key's row is put in its table with
//! the limit active, its average at the file's rate as of now, and the limit's extended windows
//! held. From there the sweep treats it as any active alert: the file is rewritten every 3 s
//! while the rate holds, and once the rate has been on the normal side for `back2norm-time`
//! (counted from the start: the time the collector was down is not taken for normal traffic)
//! the back2norm script runs with the usual argv and the file goes. Nothing runs at the
//! take-up itself: the alert had started.
//!
//! A reload does the same for the moving averages it starts from zero, and ends the alerts of
//! those it retires (an object, a `mavg` element or a limit removed, or changed so that its
//! averages could not be kept) that no moving average of the new configuration took up: their
//! back2norm scripts run and their files go, as at back-to-normal, since nothing would ever
//! end them later. That happens once every worker has moved to the new configuration.

use super::*;
use std::time::UNIX_EPOCH;

/// What [`take_up_alerts`] did with the notification files it found.
#[derive(Debug, Default)]
pub struct TakenUp {
    /// The files whose alerts are active again.
    pub taken: Vec<String>,
    /// The files that could not be taken up, with why (left as they are).
    pub left: Vec<(String, String)>,
}

/// An alert that is on, as a take-up or take-over carries it into a moving average.
struct OnAlert {
    key: PackedKey,
    limit: usize,
    /// The averaged field that decided (a take-up finds it again from the threshold).
    field: usize,
    /// Rate per second now, and the threshold it was over.
    rate: f64,
    threshold: f64,
    start_ms: u64,
    /// When the rate was last on the limit's side: back-to-normal counts from there.
    last_bad_ms: u64,
}

/// What [`Mavg::retire`] leaves for the hook thread, to be sent in this order.
#[derive(Debug, Default)]
pub struct Retired {
    /// Starts and ends the hook queue had no room for yet.
    pub held: Vec<Event>,
    /// The back2norm events of the alerts it ended.
    pub ended: Vec<Event>,
}

/// Notification files of the configured limits in `dir` (sorted names): alerts active when an
/// earlier run stopped.
pub fn notification_files(dir: &Path, mavgs: &[Arc<Mavg>]) -> Vec<String> {
    let prefixes: Vec<&str> = mavgs.iter().flat_map(|m| m.limits.iter().map(|l| l.prefix.as_str())).collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect();
    names.sort();
    names
}

/// Takes up the alerts of the notification files in `dir` at `now_ms` (the moving averages'
/// clock): once per process, before the first flow.
pub fn take_up_alerts(dir: &Path, mavgs: &[Arc<Mavg>], now_ms: u64) -> TakenUp {
    let tables = groups(mavgs);
    let mut out = TakenUp::default();
    for name in notification_files(dir, mavgs) {
        let path = dir.join(&name);
        let read = match crate::fsutil::read_input_text(&path) {
            // Gone since the listing: the hook thread ended that alert meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            read => read.map_err(|e| format!("cannot read it: {e}")),
        };
        let started = std::fs::metadata(&path).and_then(|md| md.created().or_else(|_| md.modified())).ok();
        let start_ms = started.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(now_ms, |d| (d.as_millis() as u64).min(now_ms));
        let result = read.and_then(|text| take_up_file(&tables, &name, &text, start_ms, now_ms));
        match result {
            Ok(()) => out.taken.push(name),
            Err(why) => out.left.push((name, why)),
        }
    }
    out
}

/// Takes over, for the moving averages a reload starts from zero (`started_anew`), the alerts
/// their previous versions (in `old`, same object and name) have active, where both have the
/// same key fields: each into the limit of the same name and kind, at its rate now, with its
/// threshold and start. Their memory is what holds, not the files: with the hook thread behind,
/// a file may still be there for an alert whose end is on its way, or not yet there for one
/// that started. Returns the notification files taken over, and the moving averages with no
/// such previous version (whose alerts can only be taken up from their files).
pub fn take_over_alerts(old: &[Arc<Mavg>], started_anew: &[Arc<Mavg>], now_ms: u64) -> (Vec<String>, Vec<Arc<Mavg>>) {
    let mut taken = Vec::new();
    let mut orphans = Vec::new();
    let old = by_name(old);
    for members in groups(started_anew) {
        for (m, new) in members.iter().enumerate() {
            match old.get(&(new.object.as_str(), new.name.as_str())).filter(|o| o.keys == new.keys) {
                Some(previous) => {
                    for alert in previous.active_alerts(now_ms) {
                        let spec = &previous.limits[alert.limit];
                        let Some(limit) = new.limits.iter().position(|x| x.name == spec.name && x.kind == spec.kind) else { continue };
                        let alert = OnAlert { limit, ..alert };
                        if Mavg::take_up(&members, m, &alert, now_ms).is_ok() {
                            taken.push(notification_name(&new.limits[limit], &new.key_text(&alert.key)));
                        }
                    }
                }
                None => orphans.push(new.clone()),
            }
        }
    }
    (taken, orphans)
}

/// Takes up the alert of one notification file (named `name`, holding `text`) with the limit
/// whose file it is: the one whose name for the key read from `text` is `name` (so a file
/// that only starts like another limit's is not mistaken for one of its).
fn take_up_file(tables: &[Vec<Arc<Mavg>>], name: &str, text: &str, start_ms: u64, now_ms: u64) -> Result<(), String> {
    let mut why = String::from("no limit's name for its content is the file's name");
    for members in tables {
        for (m, mavg) in members.iter().enumerate() {
            for (l, spec) in mavg.limits.iter().enumerate() {
                if !name.starts_with(&spec.prefix) {
                    continue;
                }
                match mavg.read_notification(text) {
                    Ok((key, value, threshold)) if notification_name(spec, &mavg.key_text(&key)) == name => {
                        // The time the collector was down is not taken for normal traffic.
                        let alert = OnAlert { key, limit: l, field: 0, rate: value, threshold, start_ms, last_bad_ms: now_ms };
                        return Mavg::take_up(members, m, &alert, now_ms);
                    }
                    Ok(_) => {}
                    Err(e) => why = e,
                }
            }
        }
    }
    Err(why)
}

impl Mavg {
    /// A notification file's content: the key values, the rate and the threshold, separated
    /// by spaces, on the first line (a stop between a rewrite's write and its length cut
    /// leaves the end of the longer text before it on the next).
    fn read_notification(&self, text: &str) -> Result<(PackedKey, f64, f64), String> {
        let words: Vec<&str> = text.lines().next().unwrap_or("").split_whitespace().collect();
        if words.len() != self.keys.len() + 2 {
            return Err(format!("expected {} key values, a rate and a threshold, found {} words", self.keys.len(), words.len()));
        }
        let mut vals = Vec::with_capacity(self.keys.len());
        for (id, w) in self.keys.iter().zip(&words) {
            vals.push(match *w {
                "NULL" => None,
                _ => Some(config::parse_value(*id, w).ok_or_else(|| format!("\"{w}\" is not a valid {}", id.def().names.first().unwrap_or(&"value")))?),
            });
        }
        // A rate of NaN or infinity (a file edited by hand) would make the average NaN: an
        // alert that never ends.
        let number = |w: &str, finite: bool| match w.parse::<f64>() {
            Ok(x) if x >= 0.0 && (x.is_finite() || !finite) => Ok(x),
            _ => Err(format!("\"{w}\" is not a number of 0 or more")),
        };
        let (value, threshold) = (number(words[self.keys.len()], true)?, number(words[self.keys.len() + 1], false)?);
        Ok((PackedKey::new(&self.layout, &self.layout.pack_values(&vals)), value, threshold))
    }

    /// Makes `alert`'s limit of member `m` of a table (`members`, as [`groups`] gives them)
    /// active for its key as of `now_ms`: the key's row (made if new, within `mem-m`) holds
    /// its rate in the field its threshold belongs to, the limit's state has its start and the
    /// time it was last over, and the limit's extended windows are held.
    fn take_up(members: &[Arc<Mavg>], m: usize, alert: &OnAlert, now_ms: u64) -> Result<(), String> {
        let OnAlert { ref key, limit: l, rate: value, threshold, start_ms, last_bad_ms, .. } = *alert;
        let me = &members[m];
        let hash = me.group.nest.hash_of(key);
        let cell = &me.group.cells[me.group.shard_of(hash)];
        {
            let mut guard = cell.shard.lock();
            let Shard { rows, limits, compiled } = &mut *guard;
            let slot_members = me.group.slot_members(key);
            let i = match rows.find(key, hash) {
                Some(i) => i,
                None => {
                    if !members[slot_members.clone()].iter().all(|m| m.has_room_for_key()) {
                        return Err("mem-m is full".into());
                    }
                    let new: Vec<Row> = compiled[slot_members.clone()].iter().map(|c| Row { last_ms: now_ms, n: [0.0; 3], thr: c.index_of(key) }).collect();
                    Mavg::count_new_key(members[slot_members].iter().map(|m| &**m));
                    let i = rows.insert(key, hash, &new);
                    cell.publish(rows.probe_start());
                    i
                }
            };
            let r = rows.member_row(m);
            let mut row = rows.load(i, r, now_ms);
            if row.active(l) {
                return Ok(());
            }
            let set = &compiled[m].sets[row.thr()];
            let field = me.field_of_threshold(set, l, threshold);
            let threshold = if set.rate[l][field].is_finite() { set.rate[l][field] } else { threshold };
            let dt = now_ms.saturating_sub(row.last_ms);
            for n in row.n.iter_mut() {
                *n = me.decayed(*n, dt);
            }
            row.n[field] = row.n[field].max(value * me.secs());
            row.last_ms = row.last_ms.max(now_ms);
            row.set_flag(ACTIVE_BIT, l, true);
            rows.store(i, r, &row);
            let st = limit_state(&mut limits[m], key, l, &me.states);
            (st.start_ms, st.last_bad_ms, st.last_notify_ms) = (start_ms, last_bad_ms, now_ms);
            (st.field, st.value, st.threshold) = (field, value, threshold);
        }
        me.activate(l, true);
        Ok(())
    }

    /// The averaged field a notification's threshold was for: the one whose threshold (as
    /// configured now) it is, else the first with a threshold.
    fn field_of_threshold(&self, set: &ThresholdSet, l: usize, threshold: f64) -> usize {
        let fields = 0..self.aggs.len();
        fields.clone().find(|&i| set.rate[l][i].round() == threshold).or_else(|| fields.clone().find(|&i| set.rate[l][i].is_finite())).unwrap_or(0)
    }

    /// Ends the active alerts of a moving average a reload retires (the configuration no
    /// longer has it, or has it changed so that it started from zero), but those whose
    /// notification files the new configuration took up (`taken`): returns back2norm events
    /// at `now_ms`, after any starts and ends still held, for the hook thread to run the
    /// back2norm scripts and delete the files. Called once no worker feeds the moving average
    /// any more (else a start a worker found, and has yet to send, could arrive after its
    /// end); from then on it sends nothing.
    pub fn retire(self: &Arc<Self>, taken: &[String], now_ms: u64) -> Retired {
        let mut out = Retired::default();
        if self.events.lock().take().is_none() {
            return out;
        }
        out.held = self.held.lock().drain(..).collect();
        let mut ended = Vec::new();
        for cell in &self.group.cells {
            let mut guard = cell.shard.lock();
            let Shard { rows, limits, .. } = &mut *guard;
            rows.retain(0, usize::MAX, now_ms, |key, first, rows| {
                if let Some(row) = self.member.checked_sub(first).and_then(|r| rows.get_mut(r)) {
                    self.end_alerts(key, row, &mut limits[self.member], now_ms, &mut ended);
                }
                true
            });
        }
        for OnAlert { key, limit, field, rate, threshold, start_ms, .. } in ended {
            let ev = Event { phase: Phase::Back2Norm, mavg: self.clone(), limit, keys: self.key_text(&key), field, value: rate, threshold, time_ms: now_ms, start_ms };
            if !taken.contains(&ev.notification_name()) {
                self.activate(limit, false);
                out.ended.push(ev);
            }
        }
        out
    }

    /// Every alert that is on, with its rate at `now_ms`.
    fn active_alerts(&self, now_ms: u64) -> Vec<OnAlert> {
        let mut out = Vec::new();
        for cell in &self.group.cells {
            let shard = cell.shard.lock();
            let limits = &shard.limits[self.member];
            shard.rows.for_each(now_ms, self.member, |key, row| {
                for limit in (0..self.limits.len()).filter(|&l| row.active(l)) {
                    let st = limits.get(&key).and_then(|s| s.limits.as_ref()).map_or_else(LimitState::default, |s| s[limit]);
                    out.push(self.on_alert(key, row, &st, limit, now_ms));
                }
            });
        }
        out
    }

    /// The alerts on in one key's row (with its limit states), for [`Mavg::retire`]: each is
    /// switched off and added to `ended`.
    fn end_alerts(&self, key: &PackedKey, row: &mut Row, limits: &mut LimitStates, now_ms: u64, ended: &mut Vec<OnAlert>) {
        if !row.any_active() {
            return;
        }
        for limit in 0..self.limits.len() {
            if !row.active(limit) {
                continue;
            }
            ended.push(self.on_alert(*key, row, limit_state(limits, key, limit, &self.states), limit, now_ms));
            row.set_flag(ACTIVE_BIT, limit, false);
            row.set_flag(OVER_BIT, limit, false);
        }
        remove_state(limits, key, &self.states);
    }

    /// Limit `limit` of a key's row, on, with its state `st`, as of `now_ms`.
    fn on_alert(&self, key: PackedKey, row: &Row, st: &LimitState, limit: usize, now_ms: u64) -> OnAlert {
        let rate = self.decayed(row.n[st.field], now_ms.saturating_sub(row.last_ms)) / self.secs();
        // Over at its last update (not folded into the state yet): over then.
        let last_bad_ms = if row.flag(OVER_BIT, limit) { row.last_ms.max(st.last_bad_ms) } else { st.last_bad_ms };
        OnAlert { key, limit, field: st.field, rate, threshold: st.threshold, start_ms: st.start_ms, last_bad_ms }
    }
}
