//! A delay line for emulated WAN links (`bench/wan.sh`): a two-port layer-2 forwarder.
//!
//! It runs in a "router" network namespace that holds one end of two veth pairs, opens an
//! `AF_PACKET` socket on each end, and forwards every frame that arrives on one port out of
//! the other, after holding it for a fixed one-way delay; a configurable fraction of the
//! frames is dropped instead. The router is a pure bridge: it has no addresses, so the hosts
//! on both sides see one Ethernet segment with a long wire in the middle. This kernel has no
//! `sch_netem`, so delay and loss cannot come from `tc`; rates still do (`tbf` on the
//! senders' veths).
//!
//! - One thread per direction. A thread waits (`ppoll`) until a frame arrives or the oldest
//!   held frame is due, drains its socket with `recvmmsg`, and sends every due frame with
//!   `sendmmsg`. The delay is the same for every frame of a direction, so a FIFO queue is
//!   ordered by departure time.
//! - `PACKET_VNET_HDR`: each frame comes with its virtio-net header, which says whether it
//!   is a TSO/GSO super-frame (up to 64 KiB) and where its checksum still has to be filled
//!   in. Sending the header back with the frame recreates the same GSO packet on the other
//!   veth, so the hosts keep TSO (without it a 2-core machine cannot push 1 Gbit/s through
//!   two TCP stacks and this forwarder) and the checksums stay right. Loss applies to what
//!   the forwarder sees, so a lossy link must turn TSO/GSO off on the hosts (`wan.sh` does)
//!   for the loss to be per packet rather than per super-frame.
//! - Large socket buffers (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`) absorb bursts while a thread
//!   is sending; the kernel's own drops (`PACKET_STATISTICS`) are reported at the end.
//!
//! Usage: `delayline --a IFACE --b IFACE --delay-ms MS [--loss FRACTION] [--seed N]
//! [--queue-limit-mb MB]`. It prints `delayline ready` once both sockets are bound, runs
//! until SIGTERM or SIGINT, then prints one line of counters per direction on stderr.

// AF_PACKET sockets, recvmmsg/sendmmsg, ppoll, setsockopt and a signal handler are libc
// calls with no safe wrapper among the workspace's dependencies; every unsafe block below
// is one such call on buffers this file owns.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Size of `struct virtio_net_hdr`, which precedes every frame with `PACKET_VNET_HDR`.
const VNET_HDR_LEN: usize = 10;
/// One receive slot: a GSO super-frame is at most 64 KiB of IP plus its Ethernet header.
const SLOT: usize = 1 << 17;
/// Frames per `recvmmsg` / `sendmmsg` call.
const BATCH: usize = 64;
/// Longest wait in `ppoll`, so a stop request is seen soon by both threads.
const MAX_WAIT: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Debug, Clone, PartialEq)]
struct Args {
    a: String,
    b: String,
    delay: Duration,
    loss: f64,
    seed: u64,
    queue_limit: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut a, mut b, mut delay, mut loss, mut seed, mut limit) = (None, None, None, 0.0, 0, 256);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--a" => a = Some(value()?),
            "--b" => b = Some(value()?),
            "--delay-ms" => {
                let ms: f64 = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?;
                if !(0.0..=10_000.0).contains(&ms) {
                    return Err("--delay-ms must be within 0..=10000".into());
                }
                delay = Some(Duration::from_secs_f64(ms / 1000.0));
            }
            "--loss" => {
                loss = value()?.parse().map_err(|e| format!("--loss: {e}"))?;
                if !(0.0..1.0).contains(&loss) {
                    return Err("--loss is a fraction in [0, 1)".into());
                }
            }
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--queue-limit-mb" => {
                limit = value()?
                    .parse()
                    .map_err(|e| format!("--queue-limit-mb: {e}"))?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        a: a.ok_or("--a IFACE is required")?,
        b: b.ok_or("--b IFACE is required")?,
        delay: delay.ok_or("--delay-ms MS is required")?,
        loss,
        seed,
        queue_limit: limit << 20,
    })
}

/// xorshift64*: enough randomness to pick which frames to drop.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// A uniform float in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default, Debug)]
struct Stats {
    frames: u64,
    bytes: u64,
    lost: u64,
    overflow: u64,
    truncated: u64,
    send_errors: u64,
    kernel_drops: u64,
    max_queue: usize,
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(os_err("setsockopt"))
    } else {
        Ok(())
    }
}

/// An `AF_PACKET` socket bound to interface `name`, in promiscuous mode, with virtio-net
/// headers and big buffers.
fn open_port(name: &str) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::other("bad interface name"))?;
    // SAFETY: a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(os_err(&format!("interface {name}")));
    }
    // Protocol 0: the socket receives nothing until bind() names the interface, so no frame
    // of another interface can slip in between.
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_err("socket(AF_PACKET) (needs root or CAP_NET_RAW)"));
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let f = fd.as_raw_fd();
    set_int(f, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    // Our own transmissions are not received again; where the kernel lacks this option the
    // receive path skips PACKET_OUTGOING frames instead.
    let _ = set_int(f, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(f, libc::SOL_SOCKET, force, 64 << 20).is_err() {
            set_int(f, libc::SOL_SOCKET, plain, 64 << 20)?;
        }
    }
    // SAFETY: zeroed plain-old-data structs, filled in below.
    let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
    mreq.mr_ifindex = ifindex as libc::c_int;
    mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
    // SAFETY: `mreq` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            f,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err("PACKET_ADD_MEMBERSHIP"));
    }
    // SAFETY: as above.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` outlives the call and its size is passed.
    let r = unsafe {
        libc::bind(
            f,
            (&sll as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(&format!("bind to {name}")));
    }
    Ok(fd)
}

/// Frames the kernel dropped on this socket since the last call (its receive buffer was full).
fn kernel_drops(fd: RawFd) -> u64 {
    // SAFETY: zeroed plain-old-data struct, written by the kernel.
    let mut st: libc::tpacket_stats = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` and `len` outlive the call; `len` is its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r < 0 { 0 } else { u64::from(st.tp_drops) }
}

/// Waits until `fd` is readable or `timeout` passes (or a signal arrives).
fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and a timespec that outlive the call; no signal mask.
    unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
}

/// One direction: frames arriving on `rx` leave on `tx` after `delay`.
struct Direction {
    rx: Arc<OwnedFd>,
    tx: Arc<OwnedFd>,
    delay: Duration,
    loss: f64,
    rng: Rng,
    queue_limit: usize,
    queue: VecDeque<(Instant, Vec<u8>)>,
    queued_bytes: usize,
    pool: Vec<Vec<u8>>,
    stats: Stats,
}

impl Direction {
    fn run(mut self) -> Stats {
        let mut slots = vec![0u8; SLOT * BATCH];
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.send_due(now);
            let wait = match self.queue.front() {
                Some((due, _)) => due.saturating_duration_since(now).min(MAX_WAIT),
                None => MAX_WAIT,
            };
            if !wait.is_zero() {
                wait_readable(self.rx.as_raw_fd(), wait);
            }
            // Drain what is there, but come back to sending at least every BATCH frames.
            self.receive(&mut slots);
        }
        self.stats.kernel_drops += kernel_drops(self.rx.as_raw_fd());
        self.stats
    }

    /// One `recvmmsg` of up to BATCH frames, without waiting; queues them.
    fn receive(&mut self, slots: &mut [u8]) {
        // SAFETY: zeroed plain-old-data arrays, filled in below.
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut addr: [libc::sockaddr_ll; BATCH] = unsafe { mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, slot) in slots.chunks_exact_mut(SLOT).enumerate() {
            iov[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut addr[i] as *mut libc::sockaddr_ll).cast();
            msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        }
        // SAFETY: BATCH message headers pointing at buffers that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                self.rx.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return;
        }
        let due = Instant::now() + self.delay;
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            let len = m.msg_len as usize;
            if addr[i].sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > SLOT {
                self.stats.truncated += 1;
                continue;
            }
            if len <= VNET_HDR_LEN {
                continue;
            }
            if self.loss > 0.0 && self.rng.next_f64() < self.loss {
                self.stats.lost += 1;
                continue;
            }
            if self.queued_bytes + len > self.queue_limit {
                self.stats.overflow += 1;
                continue;
            }
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&slots[i * SLOT..i * SLOT + len]);
            self.queued_bytes += len;
            self.queue.push_back((due, buf));
        }
        self.stats.max_queue = self.stats.max_queue.max(self.queued_bytes);
    }

    /// Sends every queued frame whose time has come, BATCH at a time.
    fn send_due(&mut self, now: Instant) {
        loop {
            let ready = self
                .queue
                .iter()
                .take(BATCH)
                .take_while(|(due, _)| *due <= now)
                .count();
            if ready == 0 {
                return;
            }
            // SAFETY: zeroed plain-old-data arrays, filled in below.
            let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for (i, (_, buf)) in self.queue.iter().take(ready).enumerate() {
                iov[i] = libc::iovec {
                    iov_base: buf.as_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `ready` headers pointing at queued buffers that outlive the call; the
            // kernel only reads them. The socket is bound, so no address is needed.
            let n = unsafe {
                libc::sendmmsg(
                    self.tx.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    ready as libc::c_uint,
                    0,
                )
            };
            // The first n frames left; on an error the frame at the front is the one that
            // failed: count it and drop it, so a bad frame cannot block the line.
            let (sent, failed) = if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                (0, 1)
            } else {
                (n as usize, usize::from(n == 0))
            };
            self.stats.send_errors += failed as u64;
            for k in 0..sent + failed {
                let (_, buf) = self.queue.pop_front().expect("counted above");
                self.queued_bytes -= buf.len();
                if k < sent {
                    self.stats.frames += 1;
                    self.stats.bytes += (buf.len() - VNET_HDR_LEN) as u64;
                }
                if self.pool.len() < 4096 {
                    self.pool.push(buf);
                }
            }
        }
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("delayline: {e}");
            }
            eprintln!(
                "usage: delayline --a IFACE --b IFACE --delay-ms MS [--loss FRACTION] [--seed N] [--queue-limit-mb MB]"
            );
            std::process::exit(2);
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let open = |name: &str| {
        open_port(name).unwrap_or_else(|e| {
            eprintln!("delayline: {e}");
            std::process::exit(1);
        })
    };
    let (a, b) = (Arc::new(open(&args.a)), Arc::new(open(&args.b)));
    // Anything queued before both sockets were bound is counted as a kernel drop otherwise.
    kernel_drops(a.as_raw_fd());
    kernel_drops(b.as_raw_fd());
    let seed = if args.seed != 0 {
        args.seed
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    };
    let direction = |rx: &Arc<OwnedFd>, tx: &Arc<OwnedFd>, seed: u64| Direction {
        rx: rx.clone(),
        tx: tx.clone(),
        delay: args.delay,
        loss: args.loss,
        rng: Rng::new(seed),
        queue_limit: args.queue_limit,
        queue: VecDeque::new(),
        queued_bytes: 0,
        pool: Vec::new(),
        stats: Stats::default(),
    };
    let ab = direction(&a, &b, seed);
    let ba = direction(&b, &a, seed ^ 0x5555_5555_5555_5555);
    let t_ab = thread::spawn(move || ab.run());
    let t_ba = thread::spawn(move || ba.run());
    println!(
        "delayline ready: {} <-> {}, one-way delay {:.3} ms, loss {}",
        args.a,
        args.b,
        args.delay.as_secs_f64() * 1000.0,
        args.loss
    );
    for (name, t) in [
        (format!("{}->{}", args.a, args.b), t_ab),
        (format!("{}->{}", args.b, args.a), t_ba),
    ] {
        let s = t.join().expect("forwarding thread panicked");
        eprintln!(
            "delayline {name}: {} frames, {:.1} MB forwarded; lost {} (chosen), queue overflow {}, \
             kernel drops {}, send errors {}, truncated {}, max queued {:.1} MB",
            s.frames,
            s.bytes as f64 / 1e6,
            s.lost,
            s.overflow,
            s.kernel_drops,
            s.send_errors,
            s.truncated,
            s.max_queue as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_the_flags() {
        let a = args("--a ra --b rb --delay-ms 25.5 --loss 0.01 --seed 7").unwrap();
        assert_eq!((a.a.as_str(), a.b.as_str()), ("ra", "rb"));
        assert_eq!(a.delay, Duration::from_micros(25_500));
        assert_eq!((a.loss, a.seed, a.queue_limit), (0.01, 7, 256 << 20));
        assert!(args("--a ra --b rb").is_err());
        assert!(args("--a ra --b rb --delay-ms 5 --loss 1").is_err());
        assert!(args("--a ra --b rb --delay-ms -1").is_err());
        assert!(args("--a ra --b rb --delay-ms 5 --bogus").is_err());
    }

    #[test]
    fn loss_fraction_is_about_right() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let hits = (0..n).filter(|_| r.next_f64() < 0.01).count();
        assert!((1_600..2_400).contains(&hits), "{hits} of {n}");
        assert!(
            (0..1000)
                .map(|_| r.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
