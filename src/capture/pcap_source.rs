//! pcap sources: live capture from an interface with a BPF filter, and capture files for
//! offline replay (`--read-pcap`), where the capture timestamps become the clock. Both read
//! frames the same way; only opening differs. A live capture outlives its interface: when the
//! interface is deleted and made anew (a VLAN, bond or tap interface, a driver reloaded), the
//! handle bound to the old one fails for good, so it is opened again. The handle does not
//! always fail: when the interface is made anew quickly, it may stay silent instead, bound to
//! an interface that is gone. So the interface's index is also checked once a second, and a
//! changed one is taken as a failure too.

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
    /// The interface's index when the handle was opened (0: none, as for "any"), and when it
    /// is compared with the current one next.
    ifindex: u32,
    next_index_check: std::time::Instant,
}

/// The index of the interface named `name`; 0 when there is none.
fn interface_index(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else { return 0 };
    // SAFETY: a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// How often a failed live capture is opened again.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl LiveCapture {
    /// Opens the capture (an error now is the caller's: the configuration names an interface
    /// that cannot be captured on).
    pub fn open(interface: &str, filter: &str) -> io::Result<LiveCapture> {
        let now = std::time::Instant::now();
        let mut capture = LiveCapture {
            interface: interface.to_string(),
            filter: filter.to_string(),
            cap: None,
            skipped_before: 0,
            next_try: now,
            last_error: String::new(),
            ifindex: 0,
            next_index_check: now,
        };
        capture.open_handle(now)?;
        Ok(capture)
    }

    /// Opens the handle, noting the interface's index (read first: an interface replaced
    /// meanwhile shows at the next check).
    fn open_handle(&mut self, now: std::time::Instant) -> io::Result<()> {
        let ifindex = interface_index(&self.interface);
        self.cap = Some(open_live(&self.interface, &self.filter)?);
        self.ifindex = ifindex;
        self.next_index_check = now + REOPEN_EVERY;
        Ok(())
    }

    /// Closes the handle after a failure, to be opened again; the error to report.
    fn close(&mut self, why: String) -> io::Error {
        if let Some(closed) = self.cap.take() {
            self.skipped_before += closed.skipped;
        }
        self.last_error = format!("{why}; the capture is opened again every {} s", REOPEN_EVERY.as_secs());
        io::Error::other(self.last_error.clone())
    }

    /// Whether the open handle's interface was deleted or made anew since (checked once a
    /// second).
    fn interface_replaced(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.ifindex == 0 || self.cap.is_none() || now < self.next_index_check {
            return false;
        }
        self.next_index_check = now + REOPEN_EVERY;
        interface_index(&self.interface) != self.ifindex
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
            if let Err(e) = self.open_handle(now) {
                self.last_error = format!("{e}; trying again every {} s", REOPEN_EVERY.as_secs());
                return Err(io::Error::other(self.last_error.clone()));
            }
        }
        Ok(self.cap.as_mut().expect("opened above"))
    }
}

impl Source for LiveCapture {
    fn fill(&mut self, batch: &mut Batch) -> io::Result<Fill> {
        batch.meta.clear(); // empty also when no capture could be opened
        if self.interface_replaced() {
            let why = format!("pcap on {}: the interface was deleted or made anew", self.interface);
            return Err(self.close(why));
        }
        // A handle that failed once is dead (its interface gone): closed, to be opened anew.
        self.handle()?.fill(batch).map_err(|e| self.close(e.to_string()))
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
