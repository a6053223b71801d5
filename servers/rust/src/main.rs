// Thread per connection, blocking I/O (std::net): the baseline design.
// One OS thread is spawned per accepted connection and loops on read_exact/write_all.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
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
    eprintln!("usage: rust -p PORT");
    process::exit(2);
}

/// Exactly `-p PORT`, PORT a decimal in 1..=65535.
fn parse_port(args: &[OsString]) -> Option<u16> {
    match args {
        [flag, port] if flag == "-p" => {
            let port = port.to_str()?;
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            port.parse::<u16>().ok().filter(|&p| p != 0)
        }
        _ => None,
    }
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
    let port = parse_port(&args).unwrap_or_else(|| usage());

    // std sets SO_REUSEADDR but listens with a backlog of 128; calling listen(2) again
    // on the listening socket raises the backlog (thousands of clients connect at once).
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rust: cannot listen on 127.0.0.1:{port}: {e}");
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
