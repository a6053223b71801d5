// A virtual thread per connection (JDK 21+, JEP 444): plain blocking socket code, but a read that
// would block parks the virtual thread and frees its carrier; the JDK's epoll poller resumes it.

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
    private static final String PROG = "java-virtual";

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
                int x = in.readInt(); // big-endian; parks the virtual thread until 4 bytes came
                if (x == 0) {
                    out.flush(); // answer the words before the zero, then end the whole process
                    Runtime.getRuntime().halt(0);
                }
                out.writeInt(x + 1); // int overflow wraps exactly like uint32 + 1
                // Flush unless another complete word is already buffered (pipelined words are
                // answered in one write); the next readInt may park only when fewer than 4 are.
                if (buffered.buffered() < 4) {
                    out.flush();
                }
            }
        } catch (EOFException e) {
            // peer closed (possibly mid-word): drop the connection
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
        // Virtual threads run on a ForkJoinPool of availableProcessors() carrier threads, and
        // availableProcessors() honours the CPU affinity mask. Virtual threads are always daemons
        // and there are no shutdown hooks: on SIGTERM the JVM exits promptly.
        Thread.Builder conns = Thread.ofVirtual().name("conn");
        while (true) {
            Socket sock;
            try {
                sock = server.accept();
            } catch (IOException e) {
                Thread.sleep(10); // e.g. too many open files: back off briefly, keep accepting
                continue;
            }
            conns.start(() -> serve(sock));
        }
    }
}
