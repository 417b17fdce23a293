// A minimal Orange-style meeting room as a Cloudflare Durable Object, written for the
// peer benchmark (benchmarks/peers/compare.py, issue 23): what ray-rooms does per room,
// the way a Worker does it, so both can be measured side by side on one machine.
//
// - WebSocket Hibernation API: ctx.acceptWebSocket(), webSocketMessage(),
//   webSocketClose(); each socket is tagged with its connection id (partysocket's
//   `_pk`) and carries {conn, name} as its attachment, so a hibernated room loses
//   nothing (https://developers.cloudflare.com/durable-objects/best-practices/websockets/).
// - SQLite-backed storage (ctx.storage.sql): one row per user. Durable Objects' output
//   gate holds every message sent after a write until that write is durable, as
//   ray-rooms' output gate does.
// - The protocol subset the benchmark speaks, in ray-rooms' (and Orange's) frames:
//   a connect adds the user and broadcasts `roomState`; `userUpdate` stores the user and
//   broadcasts `roomState` to every socket; `partyserver-ping` is answered with
//   `partyserver-pong`; `directMessage{to, message}` reaches the sockets of `to` as
//   `directMessage{from, message}`; `heartbeat` is accepted; anything else gets an
//   `error`. A close removes the user when it was the connection's last socket.
//
// The Worker routes /parties/rooms/{room} to the Durable Object named {room}.

import { DurableObject } from "cloudflare:workers";

const MAX_MESSAGE = 4096;

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, data TEXT NOT NULL)");
  }

  async fetch(request) {
    if (request.headers.get("Upgrade") !== "websocket") {
      return new Response("expected a WebSocket upgrade", { status: 426 });
    }
    const url = new URL(request.url);
    const conn = url.searchParams.get("_pk") || crypto.randomUUID();
    const name = url.searchParams.get("username") || conn;
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, [conn]);
    server.serializeAttachment({ conn, name });
    const user = this.user(conn) || {};
    this.store({ ...user, id: conn, name, joined: true });
    this.broadcast();
    return new Response(null, { status: 101, webSocket: client });
  }

  user(id) {
    const rows = this.sql.exec("SELECT data FROM users WHERE id = ?", id).toArray();
    return rows.length ? JSON.parse(rows[0].data) : null;
  }

  store(user) {
    this.sql.exec(
      "INSERT INTO users (id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data",
      user.id, JSON.stringify(user));
  }

  broadcast() {
    const users = this.sql.exec("SELECT data FROM users ORDER BY id").toArray()
      .map((row) => JSON.parse(row.data));
    const text = JSON.stringify({ type: "roomState", state: { users } });
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.send(text);
      } catch {
        // closing: its webSocketClose removes it
      }
    }
  }

  async webSocketMessage(ws, message) {
    const { conn, name } = ws.deserializeAttachment();
    if (typeof message !== "string" || message.length > MAX_MESSAGE) {
      ws.send(JSON.stringify({ type: "error", error: "message too large or binary" }));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(message);
    } catch {
      ws.send(JSON.stringify({ type: "error", error: "invalid JSON" }));
      return;
    }
    switch (msg && msg.type) {
      case "userUpdate": {
        const before = this.user(conn) || {};
        this.store({ ...before, ...(msg.user || {}), id: conn, name });
        this.broadcast();
        break;
      }
      case "partyserver-ping":
        ws.send(JSON.stringify({ type: "partyserver-pong" }));
        break;
      case "directMessage": {
        const text = JSON.stringify({ type: "directMessage", from: conn, message: msg.message });
        for (const peer of this.ctx.getWebSockets(String(msg.to))) peer.send(text);
        break;
      }
      case "heartbeat":
        break;
      default:
        ws.send(JSON.stringify({ type: "error", error: "unknown message type" }));
    }
  }

  async webSocketClose(ws, code, reason) {
    const { conn } = ws.deserializeAttachment();
    const others = this.ctx.getWebSockets(conn).filter((peer) => peer !== ws);
    if (others.length === 0) {
      this.sql.exec("DELETE FROM users WHERE id = ?", conn);
      this.broadcast();
    }
    try {
      ws.close(code === 1005 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }
}

export default {
  async fetch(request, env) {
    const match = new URL(request.url).pathname.match(/^\/parties\/rooms\/([^/]+)$/);
    if (!match) return new Response("not found", { status: 404 });
    return env.ROOMS.get(env.ROOMS.idFromName(decodeURIComponent(match[1]))).fetch(request);
  },
};
