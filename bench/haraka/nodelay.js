'use strict'
// nodelay.js - preloaded into Haraka by make bench (node -r): every TCP
// socket Haraka makes, the accepted client connections and its own
// connections to the backend, gets TCP_NODELAY. Haraka (3.3.4) leaves
// Nagle on, so a reply written in two pieces waits for the peer's delayed
// ACK; a tuned Haraka would not, and the bench compares against a tuned one.
// net.createServer and net.connect both take noDelay since Node.js 17.7.
const net = require('node:net')

const createServer = net.createServer
net.createServer = function (options, listener) {
    if (typeof options !== 'object' || options === null) return createServer.call(this, { noDelay: true }, options)
    return createServer.call(this, { ...options, noDelay: true }, listener)
}

const connect = net.connect
net.connect = net.createConnection = function (options, ...rest) {
    if (typeof options === 'object' && options !== null) options = { ...options, noDelay: true }
    return connect.call(this, options, ...rest)
}
