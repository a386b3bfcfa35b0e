//! xenoeye: a NetFlow v5/v9 and IPFIX collector and analyser.
//!
//! The pipeline, one module per stage, each depending only on the ones before it:
//!
//! ```text
//! config    xenoeye.conf + devices.conf -> typed Config (errors name file:line:col and key)
//! capture   UDP sockets (recvmmsg, SO_REUSEPORT), pcap live, capture files -> Datagram
//! decode    v5, v9, IPFIX; templates per exporter/domain, persisted -> Flow (fixed slots)
//! devices   sampling rate per exporter (applied by the decoder), dev-ip / dev-id / rate
//! dump      dump-flows text (syslog + stderr, or a file)
//! filter    filter language compiled to range tests; IP lists
//! objects   monitoring objects (mo-dir tree), per-worker fixed windows, shared moving averages
//! export    merges workers' windows, writes <table>_<time>.sql atomically, retries, db-export
//! hooks     alert events -> notification files, scripts (bounded, timed out, reaped), Lua
//! metrics   Prometheus /metrics and a status page, from counters published by every stage
//! daemon    wiring: one worker thread per capture entry, signals, offline replay, counters
//! ```
//!
//! [`fields`] is the single table of flow fields every stage reads; [`flow::Flow`] is the
//! per-worker record the decoder refills for every flow without allocating.

pub mod fields;
pub mod fsutil;
pub mod child;
pub mod flow;
pub mod config;
pub mod devices;
pub mod decode;
pub mod capture;
pub mod dump;
pub mod filter;
pub mod objects;
pub mod export;
pub mod hooks;
pub mod metrics;
pub mod log;
pub mod systemd;
pub mod daemon;
#[doc(hidden)]
pub mod testdir;
#[cfg(test)]
mod testrand;
#[cfg(test)]
mod testreadme;
