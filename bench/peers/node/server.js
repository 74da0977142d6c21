// Peer (c): Node's socket.io with @socket.io/redis-adapter, the common choice overall.
//
//   node bench/peers/node/server.js --port P [--redis redis://127.0.0.1:R/0]
//
// Readers join a room per article (query ?slug=); a post gets a seq (Redis INCR) and is
// emitted to the room; the Redis adapter carries it to the other instances. WebSocket
// transport only, no per-message deflate (socket.io's default), 64 KiB messages.
"use strict";

const http = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" })[c]);
}

function commentFrame(seq, post) {
  const body = String(post.body || "").slice(0, 20000);
  return {
    type: "comment", seq,
    comment: {
      id: crypto.randomBytes(6).toString("hex"), parent: post.parent || null,
      author: { name: String(post.name || "").slice(0, 80), about: post.about ? String(post.about).slice(0, 120) : null },
      body, html: "<p>" + escapeHtml(body) + "</p>", created_at: new Date().toISOString(), status: "visible",
    },
  };
}

async function main() {
  const port = Number(arg("--port"));
  const redisUrl = arg("--redis");
  const server = http.createServer();
  const io = new Server(server, { transports: ["websocket"], serveClient: false, maxHttpBufferSize: 65536 });
  let redis = null;
  let counter = 0;
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub, { key: "bench-node" }));
    redis = pub;
  }
  io.on("connection", async (socket) => {
    const slug = String(socket.handshake.query.slug || "default");
    socket.join(slug);
    socket.on("post", async (post) => {
      if (!post || typeof post !== "object") return;
      const seq = redis ? await redis.incr(`bench:node:seq:${slug}`) : ++counter;
      io.to(slug).emit("comment", commentFrame(seq, post));
    });
    const seq = redis ? Number((await redis.get(`bench:node:seq:${slug}`)) || 0) : counter;
    socket.emit("welcome", { type: "welcome", seq, readers: 0, epoch: "bench" });
  });
  const stop = () => { io.close(); server.close(); setTimeout(() => process.exit(0), 500).unref(); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  server.listen(port, "127.0.0.1", 4096);
}

main().catch((err) => { console.error(err); process.exit(1); });
