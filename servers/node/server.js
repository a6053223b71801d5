// Single-threaded event loop on Node's `net` module (libuv/epoll underneath):
// every connection is a callback-driven socket with its own reassembly buffer.
'use strict';

const net = require('net');

const USAGE = 'usage: node -p PORT [-a ADDRESS]';

// Accepts `-p PORT [-a ADDRESS]`: PORT a decimal in 1..65535, ADDRESS an IPv4 address
// (default 127.0.0.1). Anything else: one line on stderr, exit status 2.
function parseArgs(args) {
  const given = new Map();
  for (let i = 0; i < args.length; i += 2) {
    if (i + 1 === args.length || !['-p', '-a'].includes(args[i])) fail(USAGE);
    given.set(args[i], args[i + 1]);
  }
  const port = given.get('-p') ?? '';
  const host = given.get('-a') ?? '127.0.0.1';
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) fail(USAGE);
  if (!net.isIPv4(host)) fail(`node: -a ${host} is not an IPv4 address`);
  return { port: Number(port), host };
}

function fail(message) {
  process.stderr.write(message + '\n');
  process.exit(2);
}

function serve(socket) {
  socket.setNoDelay(true);
  // Bytes of an incomplete word carried over to the next chunk.
  let pending = null;

  socket.on('data', (chunk) => {
    let buf = chunk;
    if (pending !== null) {
      buf = Buffer.concat([pending, chunk]);
      pending = null;
    }
    const words = buf.length >>> 2;
    if (words > 0) {
      // One reply per word, in order, sent as a single write.
      const reply = Buffer.allocUnsafe(words * 4);
      for (let i = 0; i < words; i++) {
        const challenge = buf.readUInt32BE(i * 4);
        if (challenge === 0) {
          if (i > 0) socket.write(reply.subarray(0, i * 4));
          process.exit(0);
        }
        reply.writeUInt32BE((challenge + 1) >>> 0, i * 4);
      }
      // A peer that pipelines without reading must not grow our buffers forever.
      if (!socket.write(reply)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    }
    if (buf.length > words * 4) {
      pending = Buffer.from(buf.subarray(words * 4));
    }
  });
  // A reset or broken connection only drops that connection.
  socket.on('error', () => socket.destroy());
}

function main() {
  const { port, host } = parseArgs(process.argv.slice(2));
  const server = net.createServer(serve);
  let listening = false;
  server.on('error', (err) => {
    process.stderr.write(`node: ${err.message}\n`);
    // Not listening (say, the port is taken) is fatal; a failed accept (EMFILE, ECONNABORTED)
    // costs one connection, and the server keeps accepting the others.
    if (!listening) process.exit(1);
  });
  // libuv sets SO_REUSEADDR on the listening socket.
  server.listen({ port, host, backlog: 4096 }, () => {
    listening = true;
  });
}

main();
