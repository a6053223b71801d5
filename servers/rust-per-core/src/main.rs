// Thread per core, async without work stealing: one single-threaded (current_thread) tokio
// runtime per CPU in the affinity mask, each with its own SO_REUSEPORT listener and tasks.

use socket2::{Domain, Protocol, Socket, Type};
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use std::{env, process, thread};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BACKLOG: i32 = 4096;
const READ_CHUNK: usize = 4096; // a multiple of 4, so one read's replies fit in READ_CHUNK

fn usage() -> ! {
    eprintln!("usage: rust-per-core -p PORT [-a ADDRESS]");
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
                    eprintln!("rust-per-core: -a {value} is not an IPv4 address");
                    process::exit(2)
                });
            }
            _ => usage(),
        }
    }
    SocketAddr::from((address, port.unwrap_or_else(|| usage())))
}

fn fail(what: &str, e: io::Error) -> ! {
    eprintln!("rust-per-core: {what}: {e}");
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
/// make sure the port is actually free first.
fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(READ_CHUNK);
    let mut word = [0u8; 4]; // partial word carried over between reads
    let mut have = 0;
    loop {
        // A short read tells tokio the socket is drained, so the next read waits for
        // readiness instead of trying a recv that would return EAGAIN.
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return, // closed (possibly mid-word) or errored
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            word[have] = byte;
            have += 1;
            if have < 4 {
                continue;
            }
            have = 0;
            let x = u32::from_be_bytes(word);
            if x == 0 {
                let _ = stream.write_all(&out).await; // replies to the words before the zero
                process::exit(0);
            }
            out.extend_from_slice(&x.wrapping_add(1).to_be_bytes());
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

/// One core's server: accept on its own listener and serve every connection on this thread.
fn run(listener: std::net::TcpListener) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                // e.g. EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let addr = parse_args(&args);

    // Respects the CPU affinity mask (sched_getaffinity) and cgroup quotas.
    let threads = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    check_port_free(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e));
    let mut listeners: Vec<_> = (0..threads)
        .map(|_| reuseport_listener(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}"), e)))
        .collect();

    // The last runtime runs on the main thread; the others get threads of their own.
    let main_listener = listeners.pop().expect("at least one thread");
    for (i, listener) in listeners.into_iter().enumerate() {
        thread::Builder::new()
            .name(format!("core-{i}"))
            .spawn(move || run(listener).unwrap_or_else(|e| fail("runtime", e)))
            .unwrap_or_else(|e| fail("spawn", e));
    }
    run(main_listener).unwrap_or_else(|e| fail("runtime", e));
}
