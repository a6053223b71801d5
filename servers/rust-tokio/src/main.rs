// Async/await on tokio's multi-threaded work-stealing runtime (one worker per available
// core): one task per connection, written as straight-line read_exact/write_all code.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use std::{env, process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const BACKLOG: u32 = 4096;

fn usage() -> ! {
    eprintln!("usage: rust-tokio -p PORT");
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

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // TcpListener::bind would use a backlog of 1024; thousands of clients connect at once.
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut word = [0u8; 4];
    loop {
        // read_exact copes with split words and leaves pipelined ones for the next turn.
        if stream.read_exact(&mut word).await.is_err() {
            return; // closed (possibly mid-word) or errored: drop this connection
        }
        let n = u32::from_be_bytes(word);
        if n == 0 {
            process::exit(0);
        }
        if stream.write_all(&n.wrapping_add(1).to_be_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let port = parse_port(&args).unwrap_or_else(|| usage());
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let listener = bind(addr).unwrap_or_else(|e| {
        eprintln!("rust-tokio: cannot listen on {addr}: {e}");
        process::exit(1);
    });

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
