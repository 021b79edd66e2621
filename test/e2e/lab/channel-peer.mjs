/* global process, Buffer, setTimeout, clearTimeout, console */
// A stranger on the Swarm workers' channel, as a node's root could be: it holds the channel's
// pre-shared key (its own worker's secret), connects to another node's worker as the daemon
// does, sends one line and prints the first line it gets back. Run inside a node's namespace:
//   ip netns exec NODE node channel-peer.mjs PSK_BASE64 HOST PORT MESSAGE_JSON
// Exit 0 once a line came back (or the worker closed), 1 on a connection error; 10 s at most.
import { connect } from "node:tls";

const [psk, host, port, message] = process.argv.slice(2);
const socket = connect({
  host,
  port: Number(port),
  ciphers: "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:PSK-AES256-GCM-SHA384",
  minVersion: "TLSv1.2",
  maxVersion: "TLSv1.2",
  checkServerIdentity: () => undefined,
  pskCallback: () => ({ psk: Buffer.from(psk, "base64"), identity: "trafficjam-daemon" }),
});
const timer = setTimeout(() => {
  console.error("channel-peer: no answer within 10 s");
  process.exit(1);
}, 10_000);
let buffered = "";
socket.setEncoding("utf8");
socket.on("secureConnect", () => socket.write(`${message}\n`));
socket.on("data", (chunk) => {
  buffered += chunk;
  const i = buffered.indexOf("\n");
  if (i < 0) return;
  console.log(buffered.slice(0, i));
  clearTimeout(timer);
  socket.end();
  process.exit(0);
});
socket.on("error", (error) => {
  console.error(`channel-peer: ${error.message}`);
  process.exit(1);
});
socket.on("close", () => {
  clearTimeout(timer);
  process.exit(0);
});
