// Completion-based I/O: one io_uring per CPU in the affinity mask, each driven by one thread
// with its own SO_REUSEPORT listener, multishot accept and multishot recv into a buffer ring.
//
// One ring per thread, not one shared ring: a ring has a single submitter (no locks, and the
// kernel's SINGLE_ISSUER/DEFER_TASKRUN fast paths), and the layout matches c-epoll and
// rust-multiplex, so the comparison is completions against readiness, not a different
// threading. SIGTERM keeps its default action: it kills the process even inside
// io_uring_enter, and the kernel cancels the rings' pending requests.

use io_uring::types::{BufRingEntry, Fd, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::{Domain, Protocol, Socket, Type};
use std::alloc::{alloc_zeroed, Layout};
use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use std::{env, mem, process, thread};

const BACKLOG: i32 = 4096;
const RING_ENTRIES: u32 = 256;
const CQ_ENTRIES: u32 = 4096; // multishot requests post many completions per submission
const BUF_COUNT: u16 = 256; // provided receive buffers per ring (a power of two)
const BUF_SIZE: usize = 4096;
const BUF_GROUP: u16 = 0;
/// Stop receiving from a client that pipelines faster than it reads replies once this much
/// output is queued; receiving resumes when all of it has been sent.
const MAX_PENDING_OUT: usize = 64 * 1024;
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

// user_data: connection slot << 8 | what completed.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const RETRY_TIMER: u64 = 3;
const CANCEL: u64 = 4;

fn usage() -> ! {
    eprintln!("usage: rust-uring -p PORT [-a ADDRESS]");
    process::exit(2);
}

/// `-p PORT [-a ADDRESS]`: PORT a decimal in 1..=65535, ADDRESS an IPv4 address (default
/// 127.0.0.1).
fn parse_args(args: &[OsString]) -> SocketAddr {
    let (mut port, mut address) = (None, Ipv4Addr::LOCALHOST);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.to_str()).unwrap_or_else(|| usage());
        match flag.to_str() {
            Some("-p") if value.bytes().all(|b| b.is_ascii_digit()) => {
                port = Some(value.parse().ok().filter(|&p| p != 0).unwrap_or_else(|| usage()));
            }
            Some("-a") => {
                address = value.parse().unwrap_or_else(|_| {
                    eprintln!("rust-uring: -a {value} is not an IPv4 address");
                    process::exit(2)
                });
            }
            _ => usage(),
        }
    }
    SocketAddr::from((address, port.unwrap_or_else(|| usage())))
}

fn fail(what: &str, e: io::Error) -> ! {
    eprintln!("rust-uring: {what}: {e}");
    process::exit(1);
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// SO_REUSEPORT would silently share the port with a stale listener of the same user;
/// make sure the port is actually free first.
fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

/// Receive buffers the kernel picks from (IORING_REGISTER_PBUF_RING): a page-aligned ring of
/// descriptors whose tail we advance to hand a buffer back.
struct BufRing {
    entries: *mut BufRingEntry,
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn register(ring: &IoUring) -> io::Result<BufRing> {
        let layout = Layout::from_size_align(BUF_COUNT as usize * mem::size_of::<BufRingEntry>(), 4096)
            .expect("buffer ring layout");
        // Never freed: it lives as long as the ring, which lives as long as the process.
        let entries = unsafe { alloc_zeroed(layout) } as *mut BufRingEntry;
        if entries.is_null() {
            return Err(ErrorKind::OutOfMemory.into());
        }
        let mut bufs = BufRing { entries, data: vec![0; BUF_COUNT as usize * BUF_SIZE], tail: 0 };
        unsafe { ring.submitter().register_buf_ring_with_flags(entries as u64, BUF_COUNT, BUF_GROUP, 0)? };
        for bid in 0..BUF_COUNT {
            bufs.give_back(bid);
        }
        Ok(bufs)
    }

    fn get(&self, bid: u16, len: usize) -> &[u8] {
        &self.data[bid as usize * BUF_SIZE..][..len]
    }

    fn give_back(&mut self, bid: u16) {
        let addr = self.data.as_ptr() as u64 + (bid as usize * BUF_SIZE) as u64;
        unsafe {
            let entry = &mut *self.entries.add((self.tail & (BUF_COUNT - 1)) as usize);
            entry.set_addr(addr);
            entry.set_len(BUF_SIZE as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            // The kernel reads the tail concurrently: publish the entry before it.
            let tail = &*(BufRingEntry::tail(self.entries) as *const AtomicU16);
            tail.store(self.tail, Ordering::Release);
        }
    }
}

struct Conn {
    stream: TcpStream,
    word: [u8; 4], // partial word carried over between receives
    have: usize,
    out: Vec<u8>,     // replies queued while a send is in flight
    sending: Vec<u8>, // replies the kernel is sending; must stay put until it completes
    sent: usize,      // bytes of `sending` already sent
    send_busy: bool,
    recv_armed: bool, // a multishot recv is (or may still be) pending
    paused: bool,     // recv cancelled until the queued output drains
    done: bool,       // EOF or error: close once nothing is pending
    exiting: bool,    // saw a zero: end the server once earlier replies are sent
}

impl Conn {
    /// Queue one reply per complete word, in order; stop at a zero.
    fn consume(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.exiting {
            let take = (4 - self.have).min(data.len());
            self.word[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 4 {
                self.have = 0;
                let n = u32::from_be_bytes(self.word);
                if n == 0 {
                    self.exiting = true;
                } else {
                    self.out.extend_from_slice(&n.wrapping_add(1).to_be_bytes());
                }
            }
        }
    }

    fn pending(&self) -> usize {
        self.out.len() + self.sending.len() - self.sent
    }
}

struct Worker {
    ring: IoUring,
    listener: TcpListener,
    bufs: BufRing,
    conns: Vec<Option<Conn>>, // slab indexed by connection slot
    free: Vec<usize>,
    retry_after: Box<Timespec>, // read by the kernel while the retry timer is pending
}

impl Worker {
    fn new(listener: TcpListener) -> io::Result<Worker> {
        // The fast paths for a ring used by the one thread that created it (Linux 6.1+).
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(CQ_ENTRIES)
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().setup_cqsize(CQ_ENTRIES).build(RING_ENTRIES))?;
        let bufs = BufRing::register(&ring)?;
        let retry_after = Box::new(Timespec::from(ACCEPT_RETRY));
        Ok(Worker { ring, listener, bufs, conns: Vec::new(), free: Vec::new(), retry_after })
    }

    fn push(&mut self, entry: squeue::Entry) {
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit().unwrap_or_else(|e| fail("io_uring submit", e));
        }
    }

    fn arm_accept(&mut self) {
        let fd = Fd(self.listener.as_raw_fd());
        self.push(opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build().user_data(ACCEPT));
    }

    fn arm_recv(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("live connection");
        conn.recv_armed = true;
        let fd = Fd(conn.stream.as_raw_fd());
        self.push(opcode::RecvMulti::new(fd, BUF_GROUP).build().user_data((slot as u64) << 8 | RECV));
    }

    /// Start sending the queued replies unless a send is already in flight.
    fn start_send(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("live connection");
        if conn.send_busy || conn.out.is_empty() {
            return;
        }
        mem::swap(&mut conn.out, &mut conn.sending);
        conn.send_busy = true;
        self.submit_send(slot);
    }

    fn submit_send(&mut self, slot: usize) {
        let conn = self.conns[slot].as_ref().expect("live connection");
        let rest = &conn.sending[conn.sent..];
        let send = opcode::Send::new(Fd(conn.stream.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data((slot as u64) << 8 | SEND);
        self.push(send);
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if res >= 0 {
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                stream,
                word: [0; 4],
                have: 0,
                out: Vec::new(),
                sending: Vec::new(),
                sent: 0,
                send_busy: false,
                recv_armed: false,
                paused: false,
                done: false,
                exiting: false,
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.conns[slot] = Some(conn);
                    slot
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            self.arm_recv(slot);
        }
        if !cqueue::more(flags) {
            if res < 0 {
                // e.g. EMFILE: wait a little (a closing connection may free a descriptor)
                // rather than spin re-arming.
                let timer = opcode::Timeout::new(&*self.retry_after as *const Timespec).build();
                self.push(timer.user_data(RETRY_TIMER));
            } else {
                self.arm_accept();
            }
        }
    }

    fn on_recv(&mut self, slot: usize, res: i32, flags: u32) {
        let Some(conn) = self.conns[slot].as_mut() else { return };
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 {
                conn.consume(self.bufs.get(bid, res as usize));
            }
            self.bufs.give_back(bid);
        }
        let more = cqueue::more(flags);
        if !more {
            conn.recv_armed = false;
        }
        if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            conn.done = true; // EOF (possibly mid-word) or an error
        }
        let rearm = !more && !conn.done && !conn.paused;
        let pause = more && !conn.paused && conn.pending() >= MAX_PENDING_OUT;
        if pause {
            conn.paused = true;
            let cancel = opcode::AsyncCancel::new((slot as u64) << 8 | RECV).build();
            self.push(cancel.user_data((slot as u64) << 8 | CANCEL));
        }
        self.start_send(slot);
        if rearm {
            self.arm_recv(slot);
        }
        self.settle(slot);
    }

    fn on_send(&mut self, slot: usize, res: i32) {
        let Some(conn) = self.conns[slot].as_mut() else { return };
        if res < 0 {
            conn.send_busy = false;
            conn.done = true;
            conn.out.clear();
            conn.sending.clear();
            conn.sent = 0;
            if conn.recv_armed {
                let cancel = opcode::AsyncCancel::new((slot as u64) << 8 | RECV).build();
                self.push(cancel.user_data((slot as u64) << 8 | CANCEL));
            }
        } else {
            conn.sent += res as usize;
            if conn.sent < conn.sending.len() {
                self.submit_send(slot);
                return;
            }
            conn.sending.clear();
            conn.sent = 0;
            conn.send_busy = false;
            self.start_send(slot);
            let conn = self.conns[slot].as_mut().expect("live connection");
            if conn.paused && !conn.send_busy {
                conn.paused = false;
                if !conn.recv_armed && !conn.done {
                    self.arm_recv(slot);
                }
            }
        }
        self.settle(slot);
    }

    /// End the server after a zero once the replies before it are out; close a finished
    /// connection once the kernel holds nothing of it.
    fn settle(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_ref() else { return };
        if conn.exiting && !conn.send_busy {
            process::exit(0);
        }
        if conn.done && !conn.send_busy && !conn.recv_armed {
            self.conns[slot] = None; // dropping the stream closes it
            self.free.push(slot);
        }
    }

    fn run(&mut self) -> ! {
        self.arm_accept();
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(CQ_ENTRIES as usize);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => fail("io_uring_enter", e),
            }
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for &(data, res, flags) in &completions {
                let slot = (data >> 8) as usize;
                match data & 0xff {
                    ACCEPT => self.on_accept(res, flags),
                    RECV => self.on_recv(slot, res, flags),
                    SEND => self.on_send(slot, res),
                    RETRY_TIMER => self.arm_accept(),
                    _ => {} // CANCEL: its effect shows up as the recv's completion
                }
            }
            completions.clear();
        }
    }
}

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let addr = parse_args(&args);

    // Respects the CPU affinity mask (sched_getaffinity) and cgroup quotas.
    let threads = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    check_port_free(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e));
    let mut listeners: Vec<TcpListener> = (0..threads)
        .map(|_| reuseport_listener(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e)))
        .collect();

    // Each ring is created by the thread that drives it (SINGLE_ISSUER); the last one on the
    // main thread.
    let main_listener = listeners.pop().expect("at least one thread");
    for (i, listener) in listeners.into_iter().enumerate() {
        thread::Builder::new()
            .name(format!("ring-{i}"))
            .spawn(move || Worker::new(listener).unwrap_or_else(|e| fail("io_uring setup", e)).run())
            .unwrap_or_else(|e| fail("spawn", e));
    }
    Worker::new(main_listener).unwrap_or_else(|e| fail("io_uring setup", e)).run();
}
