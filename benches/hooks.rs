//! Hook dispatch, per batch of 20,000 overlimit starts against 8 objects, until every call has
//! returned:
//! - `lua_dispatch`: the Lua hook threads alone (queued in batches as the hook thread does,
//!   each call building the event table and running the function);
//! - `starts_*`: the whole way from the workers' event queue through the hook thread (log
//!   line, notification file, Lua call queued), without and with an `action-lua` function;
//! - `starts_with_script`: 2,000 starts whose action script is `/bin/true`, 16 at a time, until
//!   the last has exited: how fast the hook thread replaces a finished script (fork and exec
//!   bound it, and the thread's polling; at 20 ms polling it was 40% of what 2 ms allows).
//!
//! The files go to XE_BENCH_DIR, by default /dev/shm: on ext4, creating files soon after many
//! were deleted is dominated by the kernel's inode allocation (`recently_deleted`), which would
//! measure the file system's history rather than the collector.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};
use xenoeye::filter::iplist::IpLists;
use xenoeye::hooks::lua::{LuaConfig, LuaStats};
use xenoeye::hooks::lua_pool::{LuaJob, LuaPool};
use xenoeye::hooks::{self, HookConfig};
use xenoeye::objects::{self, mavg::Event, mavg::Phase, Objects};

const EVENTS: usize = 20_000;
const OBJECTS: usize = 8;

/// `OBJECTS` objects under `dir`, each with one limit with the hook keys `hook` (JSON, after
/// a comma: `"action-lua": "on"`, say).
fn objects(dir: &Path, hook: &str) -> Objects {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("notifications")).unwrap();
    for i in 0..OBJECTS {
        let o = dir.join("mo").join(format!("o{i}"));
        std::fs::create_dir_all(&o).unwrap();
        let conf = format!(r#"{{"mavg": [{{"name": "m", "fields": ["dst host", "octets"], "overlimit": [{{"name": "l", "default": [1]{hook}}}]}}]}}"#);
        std::fs::write(o.join("mo.conf"), conf).unwrap();
        // A hook that reads the event as a real one would, and keeps a count.
        std::fs::write(o.join("mo.lua"), "function on(ev) xe.state.n = (xe.state.n or 0) + 1; xe.state.last = ev.key['dst host'] .. ev.value end").unwrap();
    }
    objects::load(&dir.join("mo"), &IpLists::new()).unwrap()
}

/// Hook settings for a benchmark in `dir`.
fn hook_config(dir: &Path) -> HookConfig {
    HookConfig {
        notifications_dir: dir.join("notifications"),
        script_timeout: Duration::from_secs(10),
        max_scripts: 16,
        max_queued: 10_000,
        max_parked: 1 << 18,
        lua: LuaConfig::default(),
        lua_threads: 4,
        lua_queue: EVENTS,
        stop_grace: hooks::EVENT_GRACE,
        silent_exporters: None,
    }
}

/// The `i`-th start of a benchmark: object `i % OBJECTS`, a key of its own.
fn start(objects: &Objects, i: usize) -> Event {
    let mavg = objects.mavgs[i % OBJECTS].clone();
    let key = std::net::Ipv4Addr::from(0x0a00_0000 + (i / OBJECTS) as u32).to_string();
    Event { phase: Phase::Start, mavg, limit: 0, keys: vec![key], field: 0, value: 2e6, threshold: 1e6, time_ms: 0, start_ms: 0 }
}

/// Sends `EVENTS` starts through a fresh hook thread and waits until all are handled.
fn dispatch(dir: &Path, objects: &Objects) -> Duration {
    let (tx, rx) = sync_channel(EVENTS);
    let start_time = Instant::now();
    let h = hooks::spawn(hook_config(dir), rx, None);
    for i in 0..EVENTS {
        tx.send(start(objects, i)).unwrap();
    }
    drop(tx);
    let stats = h.join().unwrap();
    let elapsed = start_time.elapsed();
    assert_eq!(stats.events, EVENTS as u64);
    assert_eq!(stats.lua.dropped + stats.lua.errors, 0);
    elapsed
}

/// Starts whose script `/bin/true` runs, in `starts_with_script`.
const SCRIPT_EVENTS: usize = 2_000;

/// Sends `SCRIPT_EVENTS` starts through a fresh hook thread, its queue kept open (as the
/// collector's), and waits until every script has exited.
fn script_dispatch(dir: &Path, objects: &Objects) -> Duration {
    let _ = std::fs::remove_dir_all(dir.join("notifications"));
    std::fs::create_dir_all(dir.join("notifications")).unwrap();
    let (tx, rx) = sync_channel(SCRIPT_EVENTS);
    let start_time = Instant::now();
    let h = hooks::spawn(hook_config(dir), rx, None);
    for i in 0..SCRIPT_EVENTS {
        tx.send(start(objects, i)).unwrap();
    }
    while h.stats.lock().scripts_ok < SCRIPT_EVENTS as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start_time.elapsed();
    drop(tx);
    let stats = h.join().unwrap();
    assert_eq!((stats.scripts_ok, stats.scripts_failed), (SCRIPT_EVENTS as u64, 0));
    elapsed
}

/// Hands `EVENTS` starts to a fresh Lua pool in batches of 1024 and waits for every call.
fn lua_dispatch(objects: &Objects) -> Duration {
    let start = Instant::now();
    let mut pool = LuaPool::spawn(&LuaConfig::default(), 4, EVENTS);
    for i in 0..EVENTS {
        let mavg = objects.mavgs[i % OBJECTS].clone();
        let key = std::net::Ipv4Addr::from(0x0a00_0000 + (i / OBJECTS) as u32).to_string();
        let ev = Event { phase: Phase::Start, mavg, limit: 0, keys: vec![key], field: 0, value: 2e6, threshold: 1e6, time_ms: 0, start_ms: 0 };
        pool.submit(LuaJob::Event(ev, PathBuf::from("/n"), Vec::new()));
        if i % 1024 == 1023 {
            pool.flush();
        }
    }
    pool.finish(Duration::from_secs(600));
    let elapsed = start.elapsed();
    assert_eq!(pool.stats(), LuaStats { calls: EVENTS as u64, ..LuaStats::default() });
    elapsed
}

fn hook_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("hooks");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    let base = std::env::var_os("XE_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
    });
    for lua in [false, true] {
        let dir = base.join(format!("xe-bench-hooks-{lua}-{}", std::process::id()));
        let objects = objects(&dir, if lua { r#", "action-lua": "on""# } else { "" });
        if lua {
            g.bench_function("lua_dispatch", |b| b.iter_custom(|iters| (0..iters).map(|_| lua_dispatch(&objects)).sum()));
        }
        let name = if lua { "starts_with_lua_hook" } else { "starts_notification_only" };
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| dispatch(&dir, &objects)).sum()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    g.throughput(Throughput::Elements(SCRIPT_EVENTS as u64));
    let dir = base.join(format!("xe-bench-hooks-script-{}", std::process::id()));
    let objects = objects(&dir, r#", "action-script": "/bin/true""#);
    g.bench_function("starts_with_script", |b| b.iter_custom(|iters| (0..iters).map(|_| script_dispatch(&dir, &objects)).sum()));
    std::fs::remove_dir_all(&dir).unwrap();
    g.finish();
}

criterion_group!(benches, hook_dispatch);
criterion_main!(benches);
