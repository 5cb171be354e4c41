'use strict';
// Preloaded with `node --require` before the Portkey gateway starts.
//
// The gateway calls server.listen(port) with no host, which Node binds to every interface.
// We only ever want it reachable from this machine, so every TCP listen is forced onto
// 127.0.0.1 whatever form the call takes. Unix sockets, pipes and inherited handles are
// left alone: they are not reachable from the network anyway.
//
// When DAGENGINE_GATEWAY_PORT_FILE is set, the first TCP port actually bound is written to
// that file, so the parent can ask for port 0 and learn which port the OS picked.

const fs = require('fs');
const net = require('net');

const LOOPBACK = '127.0.0.1';
const portFile = process.env.DAGENGINE_GATEWAY_PORT_FILE;
const originalListen = net.Server.prototype.listen;
let portReported = false;

function isPort(value) {
  return typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
}

function isHostSlot(value) {
  // In listen(port, host, backlog, cb) the host is a string, or null/undefined when the
  // caller passes a placeholder; a number there is the backlog, a function the callback.
  return value === undefined || value === null || typeof value === 'string';
}

function pinnedArgs(args) {
  const [first, ...rest] = args;
  if (args.length === 0 || typeof first === 'function') {
    // listen() and listen(cb): Node picks a random port on every interface.
    return [0, LOOPBACK, ...args];
  }
  if (isPort(first)) {
    if (rest.length > 0 && isHostSlot(rest[0])) rest.shift();
    return [first, LOOPBACK, ...rest];
  }
  if (first !== null && typeof first === 'object') {
    const isTcpOptions =
      first.path === undefined &&
      first.fd === undefined &&
      first.handle === undefined &&
      first._handle === undefined;
    if (isTcpOptions) {
      const options = { ...first, host: LOOPBACK };
      delete options.ipv6Only;
      return [options, ...rest];
    }
  }
  return args; // a pipe path or a handle
}

function reportPort(server) {
  if (portReported || !portFile) return;
  const address = server.address();
  if (address === null || typeof address !== 'object') return;
  portReported = true;
  // Write then rename, so the reader never sees a half-written file.
  const partial = `${portFile}.partial`;
  fs.writeFileSync(partial, `${address.address} ${address.port}\n`);
  fs.renameSync(partial, portFile);
}

net.Server.prototype.listen = function listenOnLoopback(...args) {
  this.once('listening', () => reportPort(this));
  return originalListen.apply(this, pinnedArgs(args));
};
