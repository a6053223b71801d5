// Netty 4.2 on its native epoll transport: one boss event loop accepts, a worker group of one
// event loop per available processor serves the connections, each pinned to one loop.

import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.ServerChannel;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.net.InetSocketAddress;
import java.util.List;

public final class Main {
    private static final String PROG = "java-netty";

    /**
     * Answers every complete word of what has arrived so far; ByteToMessageDecoder keeps the 0..3
     * bytes of an incomplete word for the next read. The replies to one read go out as one
     * buffer, flushed once that read is handled (channelReadComplete).
     */
    private static final class Increment extends ByteToMessageDecoder {
        @Override
        protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> unused) {
            int words = in.readableBytes() / 4;
            if (words == 0) {
                return;
            }
            ByteBuf out = ctx.alloc().ioBuffer(words * 4);
            for (int i = 0; i < words; i++) {
                int x = in.readInt(); // big-endian
                if (x == 0) {
                    // Answer the words before the zero, then end the whole process once written.
                    in.skipBytes(in.readableBytes());
                    ctx.writeAndFlush(out).addListener(f -> Runtime.getRuntime().halt(0));
                    return;
                }
                out.writeInt(x + 1); // int overflow wraps exactly like uint32 + 1
            }
            ctx.write(out);
        }

        @Override
        public void channelReadComplete(ChannelHandlerContext ctx) throws Exception {
            ctx.flush();
            super.channelReadComplete(ctx);
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            ctx.close(); // reset/broken connection: drop it, keep serving the others
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

    public static void main(String[] args) throws InterruptedException {
        InetSocketAddress endpoint = parseArgs(args);
        IoHandlerFactory io;
        Class<? extends ServerChannel> serverChannel;
        if (Epoll.isAvailable()) {
            io = EpollIoHandler.newFactory();
            serverChannel = EpollServerSocketChannel.class;
        } else {
            System.err.println(PROG + ": epoll unavailable, falling back to NIO: " + Epoll.unavailabilityCause());
            io = NioIoHandler.newFactory();
            serverChannel = NioServerSocketChannel.class;
        }
        // availableProcessors() honours the CPU affinity mask (sched_getaffinity) and cgroups.
        int workers = Math.max(1, Runtime.getRuntime().availableProcessors());
        EventLoopGroup boss = new MultiThreadIoEventLoopGroup(1, io);
        EventLoopGroup worker = new MultiThreadIoEventLoopGroup(workers, io);
        Channel server;
        try {
            server = new ServerBootstrap()
                    .group(boss, worker)
                    .channel(serverChannel)
                    .option(ChannelOption.SO_BACKLOG, 4096)
                    .option(ChannelOption.SO_REUSEADDR, true)
                    .childOption(ChannelOption.TCP_NODELAY, true)
                    .childHandler(new ChannelInitializer<Channel>() {
                        @Override
                        protected void initChannel(Channel ch) {
                            ch.pipeline().addLast(new Increment());
                        }
                    })
                    .bind(endpoint)
                    .sync()
                    .channel();
        } catch (Exception e) { // bind failure, e.g. the port is taken
            System.err.println(PROG + ": cannot listen on " + endpoint.getHostString() + ":"
                    + endpoint.getPort() + ": " + e.getMessage());
            System.exit(1);
            return;
        }
        // No shutdown hooks: on SIGTERM the JVM exits promptly, event loop threads and all.
        server.closeFuture().sync();
    }
}
