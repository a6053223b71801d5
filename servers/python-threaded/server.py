# Thread per connection, blocking sockets: the baseline design in Python
# (one daemon thread per accepted connection; the GIL is released while blocked in recv/send).
import os
import socket
import sys
import threading
import time

PROG = 'python-threaded'


def parse_port(argv):
    """Exactly `-p PORT` (decimal 1..65535); anything else: usage on stderr, exit 2."""
    if len(argv) == 2 and argv[0] == '-p':
        s = argv[1]
        if 0 < len(s) <= 5 and all(c in '0123456789' for c in s) and 1 <= int(s) <= 65535:
            return int(s)
    sys.stderr.write(f'usage: {PROG} -p PORT\n')
    sys.exit(2)


def serve_connection(conn):
    """Answer each complete 4-byte big-endian word with word+1 (mod 2**32); zero exits."""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv = conn.recv
        sendall = conn.sendall
        pending = b''  # bytes of an incomplete word (0..3 bytes)
        while True:
            data = recv(65536)
            if not data:
                return  # peer closed (possibly mid-word): drop the connection
            if pending:
                data = pending + data
            end = len(data) & ~3
            if end == 4:  # the common ping-pong case: exactly one word
                x = int.from_bytes(data[:4], 'big')
                if x == 0:
                    os._exit(0)
                sendall(((x + 1) & 0xFFFFFFFF).to_bytes(4, 'big'))
            elif end:
                out = bytearray()
                for off in range(0, end, 4):
                    x = int.from_bytes(data[off:off + 4], 'big')
                    if x == 0:
                        if out:
                            sendall(out)  # answer the words before the zero, then end
                        os._exit(0)
                    out += ((x + 1) & 0xFFFFFFFF).to_bytes(4, 'big')
                sendall(out)
            pending = data[end:]
    except OSError:
        pass  # reset/broken connection: drop it, keep serving others
    finally:
        conn.close()


def main():
    port = parse_port(sys.argv[1:])
    # Thousands of concurrent connections mean thousands of threads: keep their stacks small.
    threading.stack_size(256 * 1024)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', port))
        listener.listen(4096)
    except OSError as e:
        sys.stderr.write(f'{PROG}: cannot listen on 127.0.0.1:{port}: {e}\n')
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
