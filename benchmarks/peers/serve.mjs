// Runs do/room.js on workerd through miniflare for benchmarks/peers/compare.py:
//   node serve.mjs PORT PERSIST_DIR
// Durable Objects with SQLite-backed storage persisted under PERSIST_DIR (on disk, as
// ray-rooms' SQLite store is). Prints "ready <url>" once it serves; stops on SIGTERM.
import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";

const port = Number(process.argv[2]);
const persist = process.argv[3];
const mf = new Miniflare({
  modules: true,
  scriptPath: fileURLToPath(new URL("./do/room.js", import.meta.url)),
  compatibilityDate: "2025-04-01",
  durableObjects: { ROOMS: { className: "Room", useSQLite: true } },
  durableObjectsPersist: persist,
  host: "127.0.0.1",
  port,
});
const url = await mf.ready;
console.log(`ready ${url}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
