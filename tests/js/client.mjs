// A real partysocket client of the ray-rooms gateway, run by tests/test_gateway.py.
//
// Usage: node client.mjs <host:port> <room> <connection id> <token>
// Connects like Orange Meets does (PartySocket, party "rooms", id -> _pk, token in the
// query), sends Orange's messages and prints one JSON line with what came back:
// {"ok": bool, "steps": {...}, "error"?: string}. Exits 0 if every step passed.
import PartySocket from "partysocket";
import WS from "ws";

const [host, room, id, token] = process.argv.slice(2);
const received = [];
const waiters = [];
const steps = {};

const socket = new PartySocket({
  host,
  party: "rooms",
  room,
  id,
  query: { token },
  WebSocket: WS,
  maxRetries: 0,
});

socket.addEventListener("message", (event) => {
  const message = JSON.parse(event.data);
  received.push(message);
  for (const waiter of [...waiters]) {
    if (waiter.match(message)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(message);
    }
  }
});

function next(match, what, ms = 15000) {
  const found = received.find(match);
  if (found) {
    received.splice(received.indexOf(found), 1);
    return Promise.resolve(found);
  }
  return new Promise((resolve, reject) => {
    const waiter = { match, resolve };
    waiters.push(waiter);
    setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
}

const send = (message) => socket.send(JSON.stringify(message));
const me = (state) => state.users.find((user) => user.id === id);

async function main() {
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", () => reject(new Error("socket error")), { once: true });
  });
  const first = await next((m) => m.type === "roomState" && me(m.state), "the first roomState");
  // the token is a credential: never print it
  const url = socket.url.replace(/token=[^&]*/, "token=redacted");
  steps.connected = { id: me(first.state).id, name: me(first.state).name, url };

  send({
    type: "userUpdate",
    user: {
      id,
      name: "a name the room must ignore",
      joined: true,
      raisedHand: true,
      speaking: false,
      tracks: { audio: "session-1/mic", audioEnabled: true, audioUnavailable: false,
                videoEnabled: false, screenShareEnabled: false },
    },
  });
  const updated = await next(
    (m) => m.type === "roomState" && me(m.state)?.raisedHand === true, "the updated roomState");
  steps.userUpdate = { name: me(updated.state).name, audio: me(updated.state).tracks.audio };

  send({ type: "heartbeat" });
  send({ type: "partyserver-ping" });
  await next((m) => m.type === "partyserver-pong", "partyserver-pong");
  steps.ping = true;

  send({ type: "directMessage", to: id, message: "hello, me" });
  const direct = await next((m) => m.type === "directMessage", "the directMessage");
  steps.directMessage = { from: direct.from, message: direct.message };

  send({ type: "noSuchType" });
  const error = await next((m) => m.type === "error", "an error");
  steps.error = error.error ?? null;
}

main()
  .then(() => {
    console.log(JSON.stringify({ ok: true, steps }));
    socket.close(1000, "done");
    setTimeout(() => process.exit(0), 100);
  })
  .catch((error) => {
    console.log(JSON.stringify({ ok: false, steps, error: String(error.message || error) }));
    socket.close();
    setTimeout(() => process.exit(1), 100);
  });
