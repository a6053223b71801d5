# Thread per connection, blocking sockets: the baseline design in Python
# (one daemon thread per accepted connection; the GIL is released while blocked in recv/send).
import ipaddress
import os
import socket
import struct
import sys
import threading
import time

PROG = 'python-threaded'
WORD = struct.Struct('>I')
MASK = 0xFFFFFFFF
BUF = 4096  # bytes read at once


def parse_args(argv):
    """`-p PORT [-a ADDRESS]`: PORT decimal 1..65535, ADDRESS an IPv4 address (default
    127.0.0.1); anything else: one line on stderr, exit 2."""
    given = dict(zip(argv[::2], argv[1::2]))
    port, address = given.pop('-p', ''), given.pop('-a', '127.0.0.1')
    digits = 0 < len(port) <= 5 and all(c in '0123456789' for c in port)
    if len(argv) % 2 or given or not digits or not 1 <= int(port) <= 65535:
        sys.stderr.write(f'usage: {PROG} -p PORT [-a ADDRESS]\n')
        sys.exit(2)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        sys.stderr.write(f'{PROG}: -a {address} is not an IPv4 address\n')
        sys.exit(2)
    return address, int(port)


def serve_connection(conn):
    """Answer each complete 4-byte big-endian word with word+1 (mod 2**32); zero exits.

    recv_into a buffer allocated once per connection, not recv(n), which allocates n bytes
    per call: an incomplete word's 0..3 bytes stay at the front for the next read.
    """
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv_into = conn.recv_into
        sendall = conn.sendall
        data = bytearray(BUF)
        view = memoryview(data)
        tails = [view[held:] for held in range(4)]  # where a read goes, after held bytes
        held = 0
        while True:
            n = recv_into(tails[held])
            if not n:
                return  # peer closed (possibly mid-word): drop the connection
            end = held + n
            if end == 4:  # the common ping-pong case: exactly one word
                (x,) = WORD.unpack_from(data)
                if x == 0:
                    os._exit(0)
                sendall(WORD.pack((x + 1) & MASK))
                held = 0
                continue
            whole = end & ~3
            if whole:
                out = bytearray(whole)
                for off in range(0, whole, 4):
                    (x,) = WORD.unpack_from(data, off)
                    if x == 0:
                        if off:
                            sendall(out[:off])  # answer the words before the zero, then end
                        os._exit(0)
                    WORD.pack_into(out, off, (x + 1) & MASK)
                sendall(out)
            held = end - whole
            data[:held] = data[whole:end]
    except OSError:
        pass  # reset/broken connection: drop it, keep serving others
    finally:
        conn.close()


def main():
    address, port = parse_args(sys.argv[1:])
    # Thousands of concurrent connections mean thousands of threads: keep their stacks small.
    threading.stack_size(256 * 1024)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(4096)
    except OSError as e:
        sys.stderr.write(f'{PROG}: cannot listen on {address}:{port}: {e}\n')
        sys.exit(1)
    # SIGTERM keeps its default disposition: the kernel ends the process at once.
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.01)  # e.g. EMFILE: back off briefly, keep accepting
            continue
        try:
            threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()
        except RuntimeError:  # cannot start another thread: refuse this connection only
            conn.close()


if __name__ == '__main__':
    main()
