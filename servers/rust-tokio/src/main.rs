// Async/await on tokio's multi-threaded work-stealing runtime (one worker per available
// core): one task per connection, written as straight-line read/write_all code.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use std::{env, process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const BACKLOG: u32 = 4096;
/// Bytes read at once; a multiple of 4, so the replies to one read fit in as many bytes.
const BUF: usize = 4096;

fn usage() -> ! {
    eprintln!("usage: rust-tokio -p PORT [-a ADDRESS]");
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
                    eprintln!("rust-tokio: -a {value} is not an IPv4 address");
                    process::exit(2)
                });
            }
            _ => usage(),
        }
    }
    SocketAddr::from((address, port.unwrap_or_else(|| usage())))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // TcpListener::bind would use a backlog of 1024; thousands of clients connect at once.
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // A read into a buffer that comes back short tells tokio the socket is drained, so the
    // next read waits for epoll instead of trying recv for an EAGAIN (read_exact of 4 bytes
    // never comes back short). It also takes pipelined words in one go.
    let mut input = [0u8; BUF];
    let mut output = [0u8; BUF];
    let mut held = 0; // bytes of an incomplete word at the start of `input`
    loop {
        let end = match stream.read(&mut input[held..]).await {
            Ok(0) | Err(_) => return, // closed (possibly mid-word) or errored: drop it
            Ok(n) => held + n,
        };
        let whole = end / 4 * 4;
        let mut len = 0;
        for word in input[..whole].chunks_exact(4) {
            let n = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            if n == 0 {
                // Answer the words before the zero if the socket takes them now, then end.
                let _ = stream.try_write(&output[..len]);
                process::exit(0);
            }
            output[len..len + 4].copy_from_slice(&n.wrapping_add(1).to_be_bytes());
            len += 4;
        }
        if len > 0 && stream.write_all(&output[..len]).await.is_err() {
            return;
        }
        input.copy_within(whole..end, 0);
        held = end - whole;
    }
}

async fn accept(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            // e.g. EMFILE: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let addr = parse_args(&args);

    let listener = bind(addr).unwrap_or_else(|e| {
        eprintln!("rust-tokio: cannot listen on {addr}: {e}");
        process::exit(1);
    });

    // The accept loop runs on a worker, as the connections' tasks do; block_on's future runs
    // on the main thread, which is not one, so each new connection would cross threads.
    let _ = tokio::spawn(accept(listener)).await;
}
