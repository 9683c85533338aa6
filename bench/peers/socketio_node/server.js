"use strict";
// Node's socket.io with @socket.io/redis-adapter: the peer dmhub is benchmarked against.
//
//   PORT=8003 REDIS_URL=unix:///path/valkey.sock node server.js
//
// A client connects to /socket.io/?EIO=4&transport=websocket&user=U and joins
// room U. The event "send" {to, text, client_id} becomes
// io.to(to).emit("message", {id, from, to, text}): the adapter delivers it to
// the room's sockets in this process and publishes it on Redis for every other
// process, which delivers it to theirs. Nothing is stored or checked.

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 8000);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";

function redisOptions(url) {
  // node-redis takes a unix socket as a path, not as a unix:// URL.
  if (url.startsWith("unix://")) {
    return { socket: { path: url.slice("unix://".length) } };
  }
  return { url };
}

async function main() {
  const pub = createClient(redisOptions(redisUrl));
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on("error", (err) => console.error("redis:", err.message));
  }
  await Promise.all([pub.connect(), sub.connect()]);

  const server = http.createServer((req, res) => {
    const ok = req.url === "/healthz";
    res.writeHead(ok ? 200 : 404, { "content-type": "text/plain" });
    res.end(ok ? "ok" : "not found");
  });
  const io = new Server(server, {
    adapter: createAdapter(pub, sub),
    transports: ["websocket"],
    perMessageDeflate: false,
    serveClient: false,
  });

  let counter = 0;
  io.on("connection", (socket) => {
    const user = String(socket.handshake.query.user || (socket.handshake.auth || {}).user || "");
    if (!user) {
      socket.disconnect(true);
      return;
    }
    socket.join(user);
    socket.on("send", (data) => {
      if (!data || typeof data.to !== "string" || typeof data.text !== "string") {
        return;
      }
      counter += 1;
      const message = { id: `${process.pid}-${counter}`, from: user, to: data.to, text: data.text };
      io.to(data.to).emit("message", message);
    });
  });

  server.listen(port, host);

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
