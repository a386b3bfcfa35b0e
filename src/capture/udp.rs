//! UDP socket source: binds (dual-stack for `"*"`), sets the receive buffer and SO_REUSEPORT,
//! and reads up to a batch of datagrams per system call with recvmmsg. A socket for an address
//! the host does not have (yet: an interface configured after the collector starts at boot)
//! is bound all the same (IP_FREEBIND) and receives once the address is up; the source then
//! watches for the address, says when it is up, and says again every 10 minutes while it is
//! not (a mistyped address would otherwise receive nothing, silently, for ever).

use super::{now_ms, Batch, Fill, Notice, Received, Source};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A bound UDP socket.
pub struct UdpSource {
    socket: Socket,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Bound to an address the host did not have at the time.
    address_absent: bool,
    /// Watching for that address to come up (see [`UdpSource::watch_address`]).
    watch: Option<AddressWatch>,
}

/// An absent address watched for.
struct AddressWatch {
    ip: IpAddr,
    since: Instant,
    next_check: Instant,
    last_warning: Instant,
}

/// How often an absent address is looked for, and how often its absence is told again.
const ADDRESS_CHECK_EVERY: Duration = Duration::from_secs(1);
const ADDRESS_WARN_EVERY: Duration = Duration::from_secs(600);

// The raw pointers in the recvmmsg headers point into this struct's own vectors and are rebuilt
// before every call; nothing is shared between threads.
unsafe impl Send for UdpSource {}

/// Opens a socket for `listen_on` (`None`: every IPv4 and IPv6 address) and `port`.
pub fn bind(listen_on: Option<IpAddr>, port: u16, rcvbuf_mib: Option<u64>, reuseport: bool) -> io::Result<UdpSource> {
    let (addr, dual) = match listen_on {
        Some(ip) => (SocketAddr::new(ip, port), false),
        None => (SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), true),
    };
    let (socket, address_absent) = match open(addr, dual, rcvbuf_mib, reuseport) {
        // A host without IPv6 still gets every IPv4 address.
        Err(_) if dual => open(SocketAddr::new(IpAddr::from([0u8; 4]), port), false, rcvbuf_mib, reuseport)?,
        r => r?,
    };
    Ok(UdpSource { socket, addrs: Vec::new(), iovecs: Vec::new(), hdrs: Vec::new(), address_absent, watch: None })
}

/// A socket bound to `addr`, and whether the host lacks that address (see the module docs).
fn open(addr: SocketAddr, dual: bool, rcvbuf_mib: Option<u64>, reuseport: bool) -> io::Result<(Socket, bool)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if dual {
        socket.set_only_v6(false)?;
    }
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if let Some(m) = rcvbuf_mib {
        let want = (m as usize).saturating_mul(1 << 20);
        socket.set_recv_buffer_size(want)?;
        if socket.recv_buffer_size().unwrap_or(0) < want {
            force_recv_buffer(&socket, want);
        }
    }
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    match socket.bind(&SockAddr::from(addr)) {
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
            match addr {
                SocketAddr::V4(_) => socket.set_freebind(true)?,
                SocketAddr::V6(_) => socket.set_freebind_ipv6(true)?,
            }
            socket.bind(&SockAddr::from(addr))?;
            Ok((socket, true))
        }
        r => r.map(|()| (socket, false)),
    }
}

/// Above `net.core.rmem_max` the kernel caps SO_RCVBUF; with CAP_NET_ADMIN (root, or the
/// systemd unit's ambient capability) SO_RCVBUFFORCE sets the size asked for.
fn force_recv_buffer(socket: &Socket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: a valid socket and a pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl UdpSource {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Whether the socket was bound to an address the host did not have then.
    pub fn address_absent(&self) -> bool {
        self.address_absent
    }

    /// Has [`Source::notice`] tell when the absent address (the caller warned of it at `now`)
    /// comes up, and repeat every 10 minutes that it has not. One of several sockets on the
    /// same address and port is enough.
    pub fn watch_address(&mut self, now: Instant) {
        if let (true, Ok(addr)) = (self.address_absent, self.local_addr()) {
            self.watch = Some(AddressWatch { ip: addr.ip(), since: now, next_check: now, last_warning: now });
        }
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.socket.recv_buffer_size()
    }
}

/// Whether the host has `ip` (a socket can be bound to it without IP_FREEBIND).
fn address_present(ip: IpAddr) -> bool {
    let Ok(socket) = Socket::new(Domain::for_address(SocketAddr::new(ip, 0)), Type::DGRAM, Some(Protocol::UDP)) else { return false };
    socket.bind(&SockAddr::from(SocketAddr::new(ip, 0))).is_ok()
}

impl AddressWatch {
    /// What to tell at `now`, given whether the address is there then; None: nothing yet.
    fn notice(&mut self, now: Instant, present: impl FnOnce(IpAddr) -> bool) -> Option<(bool, Notice)> {
        if now < self.next_check {
            return None;
        }
        self.next_check = now + ADDRESS_CHECK_EVERY;
        let waited = now.duration_since(self.since).as_secs();
        if present(self.ip) {
            let text = format!("listen-on {}: the address is on this host now ({waited} s after the start); datagrams arrive", self.ip);
            return Some((true, Notice::Info(text)));
        }
        if now.duration_since(self.last_warning) < ADDRESS_WARN_EVERY {
            return None;
        }
        self.last_warning = now;
        let text = format!("listen-on {}: still not an address of this host after {} min: nothing arrives until it is (mistyped?)", self.ip, waited / 60);
        Some((false, Notice::Warn(text)))
    }
}

impl Source for UdpSource {
    fn socket_inode(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        // /proc/self/fd/N is the socket itself: its inode is the one /proc/net/udp lists.
        std::fs::metadata(format!("/proc/self/fd/{}", self.socket.as_raw_fd())).ok().map(|m| m.ino())
    }

    fn notice(&mut self, now: Instant) -> Option<Notice> {
        let (up, notice) = self.watch.as_mut()?.notice(now, address_present)?;
        if up {
            self.watch = None;
            self.address_absent = false;
        }
        Some(notice)
    }

    fn fill(&mut self, batch: &mut Batch) -> io::Result<Fill> {
        batch.meta.clear();
        let n = batch.capacity();
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        self.addrs.resize(n, unsafe { std::mem::zeroed() });
        self.iovecs.resize(n, libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        self.hdrs.resize(n, unsafe { std::mem::zeroed() });
        for (i, buf) in batch.bufs_mut().iter_mut().enumerate() {
            self.iovecs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a live buffer of the stated length and at an address
        // slot of the stated size; the kernel writes at most that much.
        let got = unsafe {
            libc::recvmmsg(self.socket.as_raw_fd(), self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(Fill::Ready),
                _ => Err(e),
            };
        }
        let time_ms = now_ms();
        for i in 0..got as usize {
            let from = sockaddr_ip(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen);
            batch.meta.push(Received { len: self.hdrs[i].msg_len as usize, from, time_ms });
        }
        Ok(Fill::Ready)
    }
}

fn sockaddr_ip(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> IpAddr {
    // SAFETY: the kernel filled `len` bytes of a sockaddr_storage, which is large enough for any
    // address; SockAddr only reads within that length.
    let addr = unsafe {
        SockAddr::try_init(|s, l| {
            std::ptr::copy_nonoverlapping(storage, s, 1);
            *l = len;
            Ok(())
        })
    };
    addr.ok()
        .and_then(|(_, a)| a.as_socket())
        .map(|s| s.ip())
        .unwrap_or(IpAddr::from([0u8; 4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn an_absent_address_is_looked_for_every_second_and_its_absence_told_every_ten_minutes() {
        // TEST-NET-3: on no host. Bound all the same (IP_FREEBIND), nothing added to the host.
        let mut src = bind(Some("203.0.113.5".parse().unwrap()), 0, None, false).unwrap();
        assert!(src.address_absent());
        assert!(!address_present("203.0.113.5".parse().unwrap()) && address_present("127.0.0.1".parse().unwrap()));
        let t0 = Instant::now();
        assert_eq!(src.notice(t0), None, "not watched unless asked");
        src.watch_address(t0);
        let watch = src.watch.as_mut().unwrap();
        let mut looked = 0;
        let mut at = |s: u64, present: bool| watch.notice(t0 + Duration::from_secs(s), |_| { looked += 1; present });
        assert!(at(0, false).is_none() && at(599, false).is_none());
        let warn = "listen-on 203.0.113.5: still not an address of this host after 10 min: nothing arrives until it is (mistyped?)";
        assert_eq!(at(600, false), Some((false, Notice::Warn(warn.into()))));
        assert!(at(600, false).is_none() && at(601, false).is_none() && at(1199, false).is_none());
        assert!(matches!(at(1200, false), Some((false, Notice::Warn(_)))));
        let up = "listen-on 203.0.113.5: the address is on this host now (1201 s after the start); datagrams arrive";
        assert_eq!(at(1201, true), Some((true, Notice::Info(up.into()))));
        assert_eq!(looked, 7, "looked at most once a second (not twice at 600 s)");
        // The real check through the source: still absent, nothing to say for ten minutes.
        assert_eq!(src.notice(t0 + Duration::from_secs(5)), None);
        assert!(src.address_absent());
    }

    #[test]
    fn receives_a_batch_from_loopback() {
        let mut src = bind(Some("127.0.0.1".parse().unwrap()), 0, Some(1), false).unwrap();
        let port = src.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], ("127.0.0.1", port)).unwrap();
        }
        let mut batch = Batch::new(8);
        let mut got = Vec::new();
        while got.len() < 5 {
            src.fill(&mut batch).unwrap();
            for i in 0..batch.meta.len() {
                got.push(batch.payload(i).to_vec());
                assert_eq!(batch.meta[i].from, "127.0.0.1".parse::<IpAddr>().unwrap());
            }
        }
        assert_eq!(got[4], vec![4u8; 10]);
    }

    #[test]
    fn two_workers_share_a_port_with_reuseport() {
        let a = bind(Some("127.0.0.1".parse().unwrap()), 0, None, true).unwrap();
        let port = a.local_addr().unwrap().port();
        assert!(bind(Some("127.0.0.1".parse().unwrap()), port, None, true).is_ok());
        assert!(bind(Some("127.0.0.1".parse().unwrap()), port, None, false).is_err());
    }
}
