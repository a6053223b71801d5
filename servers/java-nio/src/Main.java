// Selector-based event loops (java.nio, non-blocking SocketChannels): one loop thread per
// available processor; the main thread accepts and deals connections out round-robin.

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.concurrent.ConcurrentLinkedQueue;

public final class Main {
    private static final String PROG = "java-nio";
    /** Per-connection input buffer size; the output buffer has the same size (see Conn). */
    private static final int BUF = 4096;

    /**
     * One connection: `in` holds received bytes not yet answered (at most 3 between reads),
     * `out` holds replies not yet written. Both are kept in fill ("put") mode between events.
     * We only read while `out` is empty, and one read yields at most BUF / 4 words, hence at
     * most BUF reply bytes: `out` can never overflow.
     */
    private static final class Conn {
        final SocketChannel ch;
        // Direct buffers: the channel reads and writes them in place, where a heap buffer is
        // copied through a temporary direct one on every call. Big-endian by default.
        final ByteBuffer in = ByteBuffer.allocateDirect(BUF);
        final ByteBuffer out = ByteBuffer.allocateDirect(BUF);

        Conn(SocketChannel ch) {
            this.ch = ch;
        }

        /** Write what is pending in `out`; true when everything has been written. */
        boolean flush() throws IOException {
            out.flip();
            ch.write(out);
            boolean done = !out.hasRemaining();
            out.compact();
            return done;
        }
    }

    private static final class Loop implements Runnable {
        final Selector selector;
        final ConcurrentLinkedQueue<SocketChannel> incoming = new ConcurrentLinkedQueue<>();

        Loop() throws IOException {
            selector = Selector.open();
        }

        /** Called by the acceptor thread: hand over a connection, registered by the loop itself. */
        void add(SocketChannel ch) {
            incoming.add(ch);
            selector.wakeup();
        }

        @Override
        public void run() {
            while (true) {
                try {
                    selector.select(this::handle);
                } catch (IOException e) {
                    System.err.println(PROG + ": select failed: " + e);
                    Runtime.getRuntime().halt(1);
                }
                SocketChannel ch;
                while ((ch = incoming.poll()) != null) {
                    try {
                        ch.register(selector, SelectionKey.OP_READ, new Conn(ch));
                    } catch (IOException e) {
                        close(ch);
                    }
                }
            }
        }

        private void handle(SelectionKey key) {
            Conn c = (Conn) key.attachment();
            try {
                if (key.isWritable()) {
                    if (!c.flush()) {
                        return; // socket buffer still full: wait for the next OP_WRITE
                    }
                    key.interestOps(SelectionKey.OP_READ); // drained: read again
                }
                if (key.isReadable()) {
                    onReadable(key, c);
                }
            } catch (IOException | RuntimeException e) {
                close(c.ch); // reset/broken connection: drop it, keep serving the others
            }
        }

        private void onReadable(SelectionKey key, Conn c) throws IOException {
            ByteBuffer in = c.in;
            ByteBuffer out = c.out;
            int n = c.ch.read(in);
            if (n < 0) {
                close(c.ch); // peer closed (possibly mid-word): drop the connection
                return;
            }
            in.flip();
            while (in.remaining() >= 4) {
                int x = in.getInt();
                if (x == 0) {
                    // Answer the words before the zero (best effort), then end the whole process.
                    out.flip();
                    try {
                        c.ch.write(out);
                    } catch (IOException ignored) {
                        // exiting anyway
                    }
                    Runtime.getRuntime().halt(0);
                }
                out.putInt(x + 1); // int overflow wraps exactly like uint32 + 1
            }
            in.compact(); // keep the 0..3 bytes of an incomplete word
            if (out.position() > 0 && !c.flush()) {
                key.interestOps(SelectionKey.OP_WRITE); // partial write: stop reading until drained
            }
        }
    }

    private static void close(SocketChannel ch) {
        try {
            ch.close(); // also cancels its selection key
        } catch (IOException ignored) {
            // nothing to do
        }
    }

    // A dotted quad of decimal bytes, which InetSocketAddress takes as a literal (no lookup).
    private static final String BYTE = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    private static final String IPV4 = BYTE + "(\\." + BYTE + "){3}";

    /** "-p PORT [-a ADDRESS]": PORT decimal 1..65535, ADDRESS an IPv4 address (default 127.0.0.1). */
    private static InetSocketAddress parseArgs(String[] args) {
        String port = "", address = "127.0.0.1";
        for (int i = 0; i < args.length; i += 2) {
            boolean paired = i + 1 < args.length;
            if (paired && args[i].equals("-p")) {
                port = args[i + 1];
            } else if (paired && args[i].equals("-a")) {
                address = args[i + 1];
            } else {
                usage();
            }
        }
        if (!port.matches("[0-9]{1,5}") || Integer.parseInt(port) < 1 || Integer.parseInt(port) > 65535) {
            usage();
        }
        if (!address.matches(IPV4)) {
            System.err.println(PROG + ": -a " + address + " is not an IPv4 address");
            System.exit(2);
        }
        return new InetSocketAddress(address, Integer.parseInt(port));
    }

    private static void usage() {
        System.err.println("usage: " + PROG + " -p PORT [-a ADDRESS]");
        System.exit(2);
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        InetSocketAddress endpoint = parseArgs(args);
        ServerSocketChannel server;
        try {
            server = ServerSocketChannel.open();
            server.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            server.bind(endpoint, 4096);
        } catch (IOException e) {
            System.err.println(PROG + ": cannot listen on " + endpoint.getHostString() + ":"
                    + endpoint.getPort() + ": " + e.getMessage());
            System.exit(1);
            return;
        }
        // availableProcessors() honours the CPU affinity mask (sched_getaffinity) and cgroups.
        int nloops = Math.max(1, Runtime.getRuntime().availableProcessors());
        Loop[] loops = new Loop[nloops];
        for (int i = 0; i < nloops; i++) {
            loops[i] = new Loop();
            Thread t = new Thread(loops[i], "loop-" + i);
            t.setDaemon(true); // no shutdown hooks either: SIGTERM makes the JVM exit promptly
            t.start();
        }
        // The main thread is the acceptor (blocking accept), dealing connections out round-robin.
        for (int next = 0; ; next = (next + 1) % nloops) {
            SocketChannel ch;
            try {
                ch = server.accept();
            } catch (IOException e) {
                Thread.sleep(10); // e.g. too many open files: back off briefly, keep accepting
                continue;
            }
            try {
                ch.configureBlocking(false);
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            } catch (IOException e) {
                close(ch);
                continue;
            }
            loops[next].add(ch);
        }
    }
}
