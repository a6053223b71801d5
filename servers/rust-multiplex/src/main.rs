// Fixed pool of event-loop threads, one per available core: each thread runs its own mio
// Poll (epoll) and its own SO_REUSEPORT listener, multiplexing many non-blocking connections.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::ffi::OsString;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::{env, process, thread};

const BACKLOG: i32 = 4096;
const LISTENER: Token = Token(0); // connection tokens are slab index + 1
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading from a client that pipelines faster than it reads replies once this much
/// output is queued; reading resumes when the socket becomes writable again.
const MAX_PENDING_OUT: usize = 64 * 1024;

fn usage() -> ! {
    eprintln!("usage: rust-multiplex -p PORT [-a ADDRESS]");
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
                    eprintln!("rust-multiplex: -a {value} is not an IPv4 address");
                    process::exit(2)
                });
            }
            _ => usage(),
        }
    }
    SocketAddr::from((address, port.unwrap_or_else(|| usage())))
}

fn fail(what: &str, e: io::Error) -> ! {
    eprintln!("rust-multiplex: {what}: {e}");
    process::exit(1);
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// SO_REUSEPORT would silently share the port with a stale listener of the same user;
/// make sure the port is actually free first (SO_REUSEADDR alone still refuses a bind
/// while anything listens there).
fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

struct Conn {
    stream: TcpStream,
    word: [u8; 4], // partial word carried over between reads
    have: usize,
    out: Vec<u8>, // replies not yet written
    sent: usize,  // bytes of `out` already written
}

impl Conn {
    /// Consume received bytes, queueing one reply per complete word, in order.
    fn consume(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (4 - self.have).min(data.len());
            self.word[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 4 {
                self.have = 0;
                let n = u32::from_be_bytes(self.word);
                if n == 0 {
                    // Best effort: hand over replies to words pipelined before the zero.
                    let _ = self.stream.write(&self.out[self.sent..]);
                    process::exit(0);
                }
                self.out.extend_from_slice(&n.wrapping_add(1).to_be_bytes());
            }
        }
    }

    /// Write queued output; Ok(true) when all of it has gone out.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Make all the progress possible (edge-triggered readiness). Returns false when the
    /// connection is finished (EOF, even mid-word, or an error) and must be dropped.
    fn drive(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match self.flush() {
                Err(_) => return false,
                // Output blocked and a lot queued: wait for the WRITABLE edge.
                Ok(false) if self.out.len() - self.sent >= MAX_PENDING_OUT => return true,
                _ => {}
            }
            match self.stream.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.consume(&buf[..n]);
                    // A short read from a TCP socket on Linux means its receive queue was
                    // emptied; any later data raises a fresh edge, so the usual extra
                    // read() that would only return WouldBlock is skipped (as tokio does).
                    if n < buf.len() && cfg!(target_os = "linux") {
                        return self.flush().is_ok();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>, // slab: token = index + 1
    free: Vec<usize>,
    accept_retry: bool,
}

impl EventLoop {
    fn accept_all(&mut self) {
        self.accept_retry = false;
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, Token(idx + 1), interest).is_err() {
                        self.free.push(idx);
                        continue; // stream dropped: connection closed
                    }
                    self.conns[idx] = Some(Conn { stream, word: [0; 4], have: 0, out: Vec::new(), sent: 0 });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                Err(_) => {
                    // e.g. EMFILE: the edge is consumed, so retry after the next wake-up
                    // (by then a closed connection may have freed a descriptor).
                    self.accept_retry = true;
                    return;
                }
            }
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let timeout = self.accept_retry.then(|| std::time::Duration::from_millis(10));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept_all();
                    continue;
                }
                let idx = ev.token().0 - 1;
                let alive = match self.conns.get_mut(idx) {
                    Some(Some(conn)) => conn.drive(&mut buf),
                    _ => continue,
                };
                if !alive {
                    self.conns[idx] = None; // dropping the stream closes it (and leaves epoll)
                    self.free.push(idx);
                }
            }
            if self.accept_retry {
                self.accept_all();
            }
        }
    }
}

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let addr = parse_args(&args);

    // Respects the CPU affinity mask (sched_getaffinity) and cgroup quotas.
    let threads = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    check_port_free(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e));
    let mut loops = Vec::with_capacity(threads);
    for _ in 0..threads {
        let std_listener = reuseport_listener(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e));
        let mut listener = TcpListener::from_std(std_listener);
        let poll = Poll::new().unwrap_or_else(|e| fail("epoll", e));
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap_or_else(|e| fail("epoll register", e));
        loops.push(EventLoop { poll, listener, conns: Vec::new(), free: Vec::new(), accept_retry: false });
    }

    // The last loop runs on the main thread; the others get threads of their own.
    let mut main_loop = loops.pop().expect("at least one thread");
    for (i, mut ev_loop) in loops.into_iter().enumerate() {
        thread::Builder::new()
            .name(format!("loop-{i}"))
            .spawn(move || {
                if let Err(e) = ev_loop.run() {
                    fail("event loop", e);
                }
            })
            .unwrap_or_else(|e| fail("spawn", e));
    }
    if let Err(e) = main_loop.run() {
        fail("event loop", e);
    }
}
