//! Capture: where datagrams come from. UDP sockets (batched with recvmmsg, optionally several
//! workers on one port with SO_REUSEPORT), live pcap capture, and capture files for offline
//! replay. Every source fills the same [`Batch`], so a worker's loop does not care which one it
//! reads; buffers are allocated once per worker and reused.

pub mod link;
pub mod pcap_source;
pub mod udp;

use std::io;
use std::net::IpAddr;

/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65535;

/// One received datagram's metadata; its bytes are `Batch::payload(i)`.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub len: usize,
    pub from: IpAddr,
    /// Unix milliseconds.
    pub time_ms: u64,
}

/// Reusable receive buffers.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    pub meta: Vec<Received>,
}

impl Batch {
    pub fn new(slots: usize) -> Self {
        Batch { bufs: (0..slots.max(1)).map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice()).collect(), meta: Vec::new() }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Payload of the i-th received datagram.
    pub fn payload(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.meta[i].len]
    }

    /// Copies a datagram into the next free slot; false when the batch is full.
    pub fn push(&mut self, bytes: &[u8], from: IpAddr, time_ms: u64) -> bool {
        let i = self.meta.len();
        if i >= self.bufs.len() {
            return false;
        }
        let len = bytes.len().min(MAX_DATAGRAM);
        self.bufs[i][..len].copy_from_slice(&bytes[..len]);
        self.meta.push(Received { len, from, time_ms });
        true
    }

    pub(crate) fn bufs_mut(&mut self) -> &mut [Box<[u8]>] {
        &mut self.bufs
    }
}

/// What a read from a source produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The batch holds datagrams (possibly none after a timeout).
    Ready,
    /// A capture file is finished.
    End,
}

/// A source of datagrams.
pub trait Source: Send {
    /// Clears `batch` and fills it with what is available, waiting at most a fraction of a
    /// second so the worker can notice a shutdown.
    fn fill(&mut self, batch: &mut Batch) -> io::Result<Fill>;
    /// Datagrams the source saw but could not use (non-UDP frames, fragments...).
    fn skipped(&self) -> u64 {
        0
    }
    /// Inode of the source's UDP socket, for reading its kernel drop counter.
    fn socket_inode(&self) -> Option<u64> {
        None
    }
    /// A change in the source's circumstances to tell the operator of (asked once per read;
    /// `now` is the worker's clock).
    fn notice(&mut self, _now: std::time::Instant) -> Option<Notice> {
        None
    }
}

/// What a source has to say for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Warn(String),
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
