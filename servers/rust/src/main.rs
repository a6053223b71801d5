// Thread per connection, blocking I/O (std::net): the baseline design.
// One OS thread is spawned per accepted connection and loops on read_exact/write_all.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::raw::c_int;
use std::os::unix::io::AsRawFd;
use std::{env, process, thread, time::Duration};

const BACKLOG: c_int = 4096;
const STACK_SIZE: usize = 64 * 1024;

extern "C" {
    // listen(2) from the C library std already links against (no crate needed).
    fn listen(fd: c_int, backlog: c_int) -> c_int;
}

fn usage() -> ! {
    eprintln!("usage: rust -p PORT [-a ADDRESS]");
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
                    eprintln!("rust: -a {value} is not an IPv4 address");
                    process::exit(2)
                });
            }
            _ => usage(),
        }
    }
    SocketAddr::from((address, port.unwrap_or_else(|| usage())))
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut word = [0u8; 4];
    loop {
        // read_exact copes with words split over several segments and leaves any
        // pipelined words in the socket for the next iteration.
        if stream.read_exact(&mut word).is_err() {
            return; // closed (possibly mid-word) or errored: drop this connection
        }
        let n = u32::from_be_bytes(word);
        if n == 0 {
            process::exit(0);
        }
        if stream.write_all(&n.wrapping_add(1).to_be_bytes()).is_err() {
            return;
        }
    }
}

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let addr = parse_args(&args);

    // std sets SO_REUSEADDR but listens with a backlog of 128; calling listen(2) again
    // on the listening socket raises the backlog (thousands of clients connect at once).
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rust: cannot listen on {addr}: {e}");
            process::exit(1);
        }
    };
    if unsafe { listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        eprintln!("rust: listen: {}", std::io::Error::last_os_error());
        process::exit(1);
    }

    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // If the thread cannot be created the stream is dropped (closed) and
                // the server carries on accepting.
                let _ = thread::Builder::new()
                    .stack_size(STACK_SIZE)
                    .spawn(move || serve(stream));
            }
            // e.g. EMFILE: back off briefly instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}
