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

    private static int parsePort(String[] args) {
        if (args.length == 2 && args[0].equals("-p")) {
            String s = args[1];
            if (!s.isEmpty() && s.length() <= 5 && s.chars().allMatch(c -> c >= '0' && c <= '9')) {
                int port = Integer.parseInt(s);
                if (port >= 1 && port <= 65535) {
                    return port;
                }
            }
        }
        System.err.println("usage: " + PROG + " -p PORT");
        System.exit(2);
        return -1; // unreachable
    }

    public static void main(String[] args) throws InterruptedException {
        int port = parsePort(args);
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
                    .bind("127.0.0.1", port)
                    .sync()
                    .channel();
        } catch (Exception e) { // bind failure, e.g. the port is taken
            System.err.println(PROG + ": cannot listen on 127.0.0.1:" + port + ": " + e.getMessage());
            System.exit(1);
            return;
        }
        // No shutdown hooks: on SIGTERM the JVM exits promptly, event loop threads and all.
        server.closeFuture().sync();
    }
}
