# Single-threaded event loop: an asyncio.BufferedProtocol on asyncio's default (selector) loop.
# python-uvloop runs this same protocol on uvloop by importing this file (see its server.py).
import asyncio
import ipaddress
import os
import struct
import sys

_WORD = struct.Struct('>I')
_MASK = 0xFFFFFFFF
_BUF = 4096  # bytes read at once, into the connection's own buffer


class VolleyProtocol(asyncio.BufferedProtocol):
    """Answer every complete 4-byte big-endian word with word+1 (mod 2**32), in order.

    The loop reads straight into the connection's buffer (recv_into), rather than handing
    data_received a fresh bytes object per read. Words may arrive split across reads or several
    per read; an incomplete word's 0..3 bytes stay at the front. A zero word ends the process.
    """

    __slots__ = ('transport', 'data', 'tails', 'held')

    def connection_made(self, transport):
        # asyncio (and uvloop) set TCP_NODELAY on TCP transports themselves.
        self.transport = transport
        self.data = bytearray(_BUF)
        view = memoryview(self.data)
        self.tails = [view[held:] for held in range(4)]  # where a read goes, after held bytes
        self.held = 0

    def get_buffer(self, sizehint):
        return self.tails[self.held]

    def buffer_updated(self, nbytes):
        data = self.data
        end = self.held + nbytes
        if end == 4:  # the common ping-pong case: exactly one word
            (x,) = _WORD.unpack_from(data)
            if x == 0:
                os._exit(0)
            self.transport.write(_WORD.pack((x + 1) & _MASK))
            self.held = 0
            return
        whole = end & ~3
        if whole:
            # A fresh buffer: the transport may keep what it cannot send at once.
            out = bytearray(whole)
            for off in range(0, whole, 4):
                (x,) = _WORD.unpack_from(data, off)
                if x == 0:
                    if off:
                        self.transport.write(out[:off])  # answer the words before the zero
                    os._exit(0)
                _WORD.pack_into(out, off, (x + 1) & _MASK)
            self.transport.write(out)
        self.held = end - whole
        data[: self.held] = data[whole:end]

    # Back-pressure: a peer that sends but does not read must not grow our write buffer forever.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def parse_args(prog, argv):
    """`-p PORT [-a ADDRESS]`: PORT decimal 1..65535, ADDRESS an IPv4 address (default
    127.0.0.1); anything else: one line on stderr, exit 2."""
    given = dict(zip(argv[::2], argv[1::2]))
    port, address = given.pop('-p', ''), given.pop('-a', '127.0.0.1')
    digits = 0 < len(port) <= 5 and all(c in '0123456789' for c in port)
    if len(argv) % 2 or given or not digits or not 1 <= int(port) <= 65535:
        sys.stderr.write(f'usage: {prog} -p PORT [-a ADDRESS]\n')
        sys.exit(2)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        sys.stderr.write(f'{prog}: -a {address} is not an IPv4 address\n')
        sys.exit(2)
    return address, int(port)


async def serve(address, port):
    # reuse_address defaults to True on POSIX.
    loop = asyncio.get_running_loop()
    server = await loop.create_server(VolleyProtocol, address, port, backlog=4096)
    await server.serve_forever()


def main(prog='python-asyncio', run=asyncio.run):
    """Serve forever on ADDRESS:PORT; `run` is the loop's entry point (uvloop passes its own).

    asyncio.run drives an asyncio.Runner; it installs a SIGINT handler only, so SIGTERM keeps
    its default disposition and ends us at once.
    """
    address, port = parse_args(prog, sys.argv[1:])
    try:
        run(serve(address, port))
    except OSError as e:
        sys.stderr.write(f'{prog}: cannot listen on {address}:{port}: {e}\n')
        sys.exit(1)


if __name__ == '__main__':
    main()
