// The Node peer: the same echo server as bench/server.py, on the `ws` package.
//
//     NODE_PATH=<dir with ws installed> node bench/peers/node_ws_server.js --port P
//
// Echoes every message with its type on any path; on /ack answers each message
// with its length, as text. permessage-deflate off, messages up to 64 MiB.
// bench/run.py installs `ws` into a temporary directory; it is optional.
'use strict';

const { WebSocketServer } = require('ws');

const index = process.argv.indexOf('--port');
const port = index > 0 ? Number(process.argv[index + 1]) : NaN;
if (!Number.isInteger(port)) {
  console.error('usage: node node_ws_server.js --port P');
  process.exit(2);
}

const server = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});

server.on('connection', (ws, request) => {
  const ack = request.url === '/ack';
  ws.on('message', (data, isBinary) => {
    if (ack) ws.send(String(data.length));
    else ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {});
});

server.on('listening', () => {
  const version = require('ws/package.json').version;
  console.log(`ready pid=${process.pid} ws=${version} node=${process.version}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
