# Single-threaded event loop: an asyncio.Protocol on asyncio's default (selector) event loop.
# python-uvloop runs this same protocol on uvloop by importing this file (see its server.py).
import asyncio
import os
import sys

_WORD_MASK = 0xFFFFFFFF


class VolleyProtocol(asyncio.Protocol):
    """Answer every complete 4-byte big-endian word with word+1 (mod 2**32), in order.

    Words may arrive split across several data_received calls or several per call; the 0..3
    bytes of an incomplete word are kept for the next call. A zero word ends the whole process.
    """

    __slots__ = ('transport', 'pending')

    def connection_made(self, transport):
        # asyncio (and uvloop) set TCP_NODELAY on TCP transports themselves.
        self.transport = transport
        self.pending = b''

    def data_received(self, data):
        if self.pending:
            data = self.pending + data
        end = len(data) & ~3
        if end == 4:  # the common ping-pong case: exactly one word
            x = int.from_bytes(data[:4], 'big')
            if x == 0:
                os._exit(0)
            self.transport.write(((x + 1) & _WORD_MASK).to_bytes(4, 'big'))
        elif end:
            out = bytearray()
            for off in range(0, end, 4):
                x = int.from_bytes(data[off:off + 4], 'big')
                if x == 0:
                    if out:
                        self.transport.write(out)  # answer the words before the zero, then end
                    os._exit(0)
                out += ((x + 1) & _WORD_MASK).to_bytes(4, 'big')
            self.transport.write(out)
        self.pending = data[end:]

    # Back-pressure: a peer that sends but does not read must not grow our write buffer forever.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def parse_port(prog, argv):
    """Exactly `-p PORT` (decimal 1..65535); anything else: usage on stderr, exit 2."""
    if len(argv) == 2 and argv[0] == '-p':
        s = argv[1]
        if 0 < len(s) <= 5 and all(c in '0123456789' for c in s) and 1 <= int(s) <= 65535:
            return int(s)
    sys.stderr.write(f'usage: {prog} -p PORT\n')
    sys.exit(2)


def main(prog='python-asyncio', new_event_loop=asyncio.new_event_loop):
    """Serve forever on 127.0.0.1:PORT on a loop made by new_event_loop (uvloop passes its own)."""
    port = parse_port(prog, sys.argv[1:])
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        # reuse_address defaults to True on POSIX.
        loop.run_until_complete(
            loop.create_server(VolleyProtocol, '127.0.0.1', port, backlog=4096))
    except OSError as e:
        sys.stderr.write(f'{prog}: cannot listen on 127.0.0.1:{port}: {e}\n')
        sys.exit(1)
    # No signal handlers are installed: SIGTERM keeps its default disposition and ends us at once.
    loop.run_forever()


if __name__ == '__main__':
    main()
