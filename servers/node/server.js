// Single-threaded event loop on Node's `net` module (libuv/epoll underneath):
// every connection is a callback-driven socket with its own reassembly buffer.
'use strict';

const net = require('net');

const USAGE = 'usage: node -p PORT';

// Accepts exactly `-p PORT`, PORT a decimal in 1..65535; otherwise null.
function parsePort(args) {
  if (args.length !== 2 || args[0] !== '-p' || !/^[0-9]+$/.test(args[1])) {
    return null;
  }
  const port = Number(args[1]);
  return port >= 1 && port <= 65535 ? port : null;
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
  const port = parsePort(process.argv.slice(2));
  if (port === null) {
    process.stderr.write(USAGE + '\n');
    process.exit(2);
  }
  const server = net.createServer(serve);
  let listening = false;
  server.on('error', (err) => {
    process.stderr.write(`node: ${err.message}\n`);
    // Not listening (say, the port is taken) is fatal; a failed accept (EMFILE, ECONNABORTED)
    // costs one connection, and the server keeps accepting the others.
    if (!listening) process.exit(1);
  });
  // libuv sets SO_REUSEADDR on the listening socket.
  server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
    listening = true;
  });
}

main();
