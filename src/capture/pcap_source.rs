//! pcap sources: live capture from an interface with a BPF filter, and capture files for
//! offline replay (`--read-pcap`), where the capture timestamps become the clock. Both read
//! frames the same way; only opening differs. A live capture outlives its interface: when the
//! interface is deleted and made anew (a VLAN, bond or tap interface, a driver reloaded), the
//! handle bound to the old one fails for good, so it is opened again.

use super::link::udp_payload;
use super::{Batch, Fill, Source};
use pcap::{Activated, Capture};
use std::io;

/// A pcap handle (live or file) turned into a datagram source.
pub struct PcapSource<T: Activated> {
    cap: Capture<T>,
    linktype: i32,
    skipped: u64,
    /// Live handles are non-blocking and waited for with poll(2): libpcap in immediate mode
    /// may ignore its own timeout, and a worker must notice a shutdown.
    live_fd: Option<std::os::fd::RawFd>,
}

// A pcap handle is used only by the worker thread that owns the source.
unsafe impl<T: Activated> Send for PcapSource<T> {}

/// Live capture from an interface (needs root or CAP_NET_RAW).
fn open_live(interface: &str, filter: &str) -> io::Result<PcapSource<pcap::Active>> {
    let err = |e: pcap::Error| io::Error::other(format!("pcap on {interface}: {e}"));
    let mut cap = Capture::from_device(interface)
        .map_err(err)?
        .snaplen(65535)
        .immediate_mode(true)
        .timeout(200)
        .buffer_size(16 << 20)
        .open()
        .map_err(err)?;
    if !filter.is_empty() {
        cap.filter(filter, true).map_err(err)?;
    }
    let cap = cap.setnonblock().map_err(err)?;
    let linktype = cap.get_datalink().0;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&cap);
    Ok(PcapSource { cap, linktype, skipped: 0, live_fd: Some(fd) })
}

/// Live capture on an interface that is opened again when it fails (see the module docs).
pub struct LiveCapture {
    interface: String,
    filter: String,
    /// The open handle; `None` after a failure, until opening again works.
    cap: Option<PcapSource<pcap::Active>>,
    /// What earlier handles skipped.
    skipped_before: u64,
    /// When opening is tried next, and why the last try failed.
    next_try: std::time::Instant,
    last_error: String,
}

/// How often a failed live capture is opened again.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl LiveCapture {
    /// Opens the capture (an error now is the caller's: the configuration names an interface
    /// that cannot be captured on).
    pub fn open(interface: &str, filter: &str) -> io::Result<LiveCapture> {
        let cap = open_live(interface, filter)?;
        let (interface, filter) = (interface.to_string(), filter.to_string());
        Ok(LiveCapture { interface, filter, cap: Some(cap), skipped_before: 0, next_try: std::time::Instant::now(), last_error: String::new() })
    }

    /// The open handle, opened again if the last one failed and it is time to try; else
    /// the reason it is not open.
    fn handle(&mut self) -> io::Result<&mut PcapSource<pcap::Active>> {
        if self.cap.is_none() {
            let now = std::time::Instant::now();
            if now < self.next_try {
                return Err(io::Error::other(self.last_error.clone()));
            }
            self.next_try = now + REOPEN_EVERY;
            match open_live(&self.interface, &self.filter) {
                Ok(cap) => self.cap = Some(cap),
                Err(e) => {
                    self.last_error = format!("{e}; trying again every {} s", REOPEN_EVERY.as_secs());
                    return Err(io::Error::other(self.last_error.clone()));
                }
            }
        }
        Ok(self.cap.as_mut().expect("opened above"))
    }
}

impl Source for LiveCapture {
    fn fill(&mut self, batch: &mut Batch) -> io::Result<Fill> {
        batch.meta.clear(); // empty also when no capture could be opened
        let result = self.handle()?.fill(batch);
        if let Err(e) = &result {
            // A handle that failed once is dead (its interface gone): closed, to be opened anew.
            let closed = self.cap.take().expect("filled from it");
            self.skipped_before += closed.skipped;
            self.last_error = format!("{e}; the capture is opened again every {} s", REOPEN_EVERY.as_secs());
            return Err(io::Error::other(self.last_error.clone()));
        }
        result
    }

    fn skipped(&self) -> u64 {
        self.skipped_before + self.cap.as_ref().map_or(0, |c| c.skipped)
    }
}

/// A capture file, read from start to end.
pub fn open_file(path: &std::path::Path) -> io::Result<PcapSource<pcap::Offline>> {
    let cap = Capture::from_file(path).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    let linktype = cap.get_datalink().0;
    Ok(PcapSource { cap, linktype, skipped: 0, live_fd: None })
}

/// Waits up to `ms` for the descriptor to become readable.
fn wait_readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

impl<T: Activated> Source for PcapSource<T> {
    fn fill(&mut self, batch: &mut Batch) -> io::Result<Fill> {
        batch.meta.clear();
        if let Some(fd) = self.live_fd {
            if !wait_readable(fd, 200) {
                return Ok(Fill::Ready);
            }
        }
        while batch.meta.len() < batch.capacity() {
            match self.cap.next_packet() {
                Ok(p) => {
                    let ms = p.header.ts.tv_sec as u64 * 1000 + p.header.ts.tv_usec as u64 / 1000;
                    match udp_payload(self.linktype, p.data) {
                        Some(u) => {
                            batch.push(u.payload, u.src, ms);
                        }
                        None => self.skipped += 1,
                    }
                }
                // Live: nothing more to read now.
                Err(pcap::Error::TimeoutExpired) => break,
                Err(pcap::Error::NoMorePackets) if batch.meta.is_empty() => return Ok(Fill::End),
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        Ok(Fill::Ready)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
