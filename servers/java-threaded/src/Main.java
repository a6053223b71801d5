// Thread per connection, blocking I/O (java.net.ServerSocket): the baseline design on the JVM.
// Each accepted connection gets its own daemon thread that loops readInt / writeInt.

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;

public final class Main {
    private static final String PROG = "java-threaded";
    /** Small stacks so that thousands of connection threads fit (the launcher also passes -Xss). */
    private static final long STACK_SIZE = 256 * 1024;

    /** A BufferedInputStream that can tell, without a system call, how many bytes it holds. */
    private static final class Input extends BufferedInputStream {
        Input(InputStream in) {
            super(in, 4096);
        }

        int buffered() {
            return count - pos;
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

    private static void serve(Socket sock) {
        try (sock) {
            sock.setTcpNoDelay(true);
            Input buffered = new Input(sock.getInputStream());
            DataInputStream in = new DataInputStream(buffered);
            DataOutputStream out = new DataOutputStream(new BufferedOutputStream(sock.getOutputStream(), 4096));
            while (true) {
                int x = in.readInt(); // big-endian; throws EOFException on close, even mid-word
                if (x == 0) {
                    out.flush(); // answer the words before the zero, then end the whole process
                    Runtime.getRuntime().halt(0);
                }
                out.writeInt(x + 1); // int overflow wraps exactly like uint32 + 1
                // Flush unless another complete word is already buffered (pipelined words are
                // answered in one write); the next readInt may block only when fewer than 4 are.
                if (buffered.buffered() < 4) {
                    out.flush();
                }
            }
        } catch (EOFException e) {
            // peer closed: drop the connection
        } catch (IOException e) {
            // reset/broken connection: drop it, keep serving the others
        }
    }

    public static void main(String[] args) throws InterruptedException {
        InetSocketAddress endpoint = parseArgs(args);
        ServerSocket server;
        try {
            server = new ServerSocket();
            server.setReuseAddress(true);
            server.bind(endpoint, 4096);
        } catch (IOException e) {
            System.err.println(PROG + ": cannot listen on " + endpoint.getHostString() + ":"
                    + endpoint.getPort() + ": " + e.getMessage());
            System.exit(1);
            return;
        }
        // No shutdown hooks; connection threads are daemons. SIGTERM: the JVM exits promptly.
        while (true) {
            Socket sock;
            try {
                sock = server.accept();
            } catch (IOException e) {
                Thread.sleep(10); // e.g. too many open files: back off briefly, keep accepting
                continue;
            }
            try {
                Thread t = new Thread(null, () -> serve(sock), "conn", STACK_SIZE);
                t.setDaemon(true);
                t.start();
            } catch (OutOfMemoryError e) { // cannot create another native thread
                try {
                    sock.close();
                } catch (IOException ignored) {
                    // nothing to do
                }
            }
        }
    }
}
