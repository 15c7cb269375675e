// The late-event scan (`pipelines/late_windows.json`), bound by the vcmetrics binary as a daemon
// run binds it (`vcmetrics pipelines --late-scan`), executed with mingo on audit documents with
// hand-made `_id`s, compared with buckets worked out by hand: the events written (by `_id`) in
// [mark, now − settle), at most `scan_limit` of them in `_id` order, grouped into 15-minute
// buckets of the timestamps before the run's first window, everything else in one null group.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ObjectId } from "bson";
import { Database, lateScanFor, runCommand } from "./executor.mjs";

const at = (iso) => new Date(iso);
let counter = 0;
/** An ObjectId made by a writer whose clock read `iso`; a counter keeps them distinct. */
function writtenAt(iso) {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32BE(Math.floor(Date.parse(iso) / 1000), 0);
  bytes.writeUInt32BE(++counter, 8);
  return new ObjectId(bytes);
}

// The run: hourly at 00:30 on 2026-06-01, its first window 00:00 (lookback 0), its mark at
// 00:10; the newest minute of writes waits for the next run (settle 1m).
const RUN = { period: "hourly", since: "2026-06-01T00:10:00Z", firstWindow: "2026-06-01T00:00:00Z", now: "2026-06-01T00:30:00Z" };

const ids = {
  beforeMark: writtenAt("2026-06-01T00:05:00Z"),
  a: writtenAt("2026-06-01T00:12:00Z"),
  b: writtenAt("2026-06-01T00:13:00Z"),
  c: writtenAt("2026-06-01T00:14:00Z"),
  d: writtenAt("2026-06-01T00:15:00Z"),
  notLate: writtenAt("2026-06-01T00:16:00Z"),
  stringTime: writtenAt("2026-06-01T00:17:00Z"),
  noTime: writtenAt("2026-06-01T00:18:00Z"),
  arrayTime: writtenAt("2026-06-01T00:19:00Z"),
  e: writtenAt("2026-06-01T00:20:00Z"),
  settling: writtenAt("2026-06-01T00:29:30Z"),
  future: writtenAt("2026-06-01T02:00:00Z"),
};

function auditLog() {
  return [
    { _id: ids.beforeMark, action: "call_start", timestamp: at("2026-05-31T10:20:00Z") },
    { _id: ids.a, action: "call_start", timestamp: at("2026-05-31T10:20:00Z") },
    { _id: ids.b, action: "call_end", timestamp: at("2026-05-31T10:29:59.999Z") },
    { _id: ids.c, action: "call_start", timestamp: at("2026-05-31T10:30:00Z") },
    { _id: ids.d, action: "join_attempt", timestamp: at("2026-05-30T23:59:59Z") },
    { _id: ids.notLate, action: "call_start", timestamp: at("2026-06-01T00:05:00Z") },
    { _id: ids.stringTime, action: "call_start", timestamp: "2026-05-31T10:20:00Z" },
    { _id: ids.noTime, action: "call_start" },
    { _id: ids.arrayTime, action: "call_start", timestamp: [at("2026-05-31T10:20:00Z")] },
    { _id: ids.e, action: "call_start", timestamp: at("2026-05-31T10:16:00Z") },
    { _id: ids.settling, action: "call_start", timestamp: at("2026-05-31T09:00:00Z") },
    { _id: ids.future, action: "call_start", timestamp: at("2026-05-31T09:00:00Z") },
    // Not ObjectIds: a range of ObjectIds never matches them (MongoDB compares within a type).
    { _id: "reimport-17", action: "call_start", timestamp: at("2026-05-31T09:00:00Z") },
    { _id: 42, action: "call_start", timestamp: at("2026-05-31T09:00:00Z") },
  ];
}

const ms = (iso) => Date.parse(iso);

function scan(engine, config = "") {
  const db = new Database(engine);
  db.collection("videocallauditlogs").push(...auditLog());
  const commands = lateScanFor({ ...RUN, config });
  assert.equal(commands.length, 1);
  const out = runCommand(db, commands[0]);
  return out.sort((x, y) => (x._id ?? -Infinity) - (y._id ?? -Infinity));
}

const engines = [
  ["", {}],
  [" (every conditional branch evaluated)", { eagerConditionals: true }],
];

for (const [suffix, engine] of engines) {
  test("the scan returns 15-minute buckets of the late events written since the mark" + suffix, () => {
    const out = scan(engine);
    assert.deepEqual(out.map((g) => g._id), [null, ms("2026-05-30T23:45:00Z"), ms("2026-05-31T10:15:00Z"), ms("2026-05-31T10:30:00Z")]);
    const [other, d, quarter, half] = out;
    // Scanned but not late: a timestamp in the run's windows, a string, none, an array.
    assert.equal(other.events, 4);
    assert.ok(other.firstId.equals(ids.notLate) && other.lastId.equals(ids.arrayTime));
    assert.equal(d.events, 1);
    assert.deepEqual(d.oldest, at("2026-05-30T23:59:59Z"));
    // 10:20, 10:29:59.999 and 10:16 share a bucket; 10:30:00 starts the next one.
    assert.equal(quarter.events, 3);
    assert.ok(quarter.firstId.equals(ids.a) && quarter.lastId.equals(ids.e));
    assert.deepEqual(quarter.oldest, at("2026-05-31T10:16:00Z"));
    assert.equal(half.events, 1);
    assert.ok(half.firstId.equals(ids.c));
    // Nothing written before the mark, in the settling minute, in the future, or without an
    // ObjectId was scanned.
    assert.equal(out.reduce((n, g) => n + g.events, 0), 9);
  });

  test("the scan takes at most scan_limit events, the first written" + suffix, () => {
    const out = scan(engine, "[late_events]\nscan_limit = 3\n");
    assert.deepEqual(out.map((g) => [g._id, g.events]), [[ms("2026-05-31T10:15:00Z"), 2], [ms("2026-05-31T10:30:00Z"), 1]]);
    assert.ok(out[0].lastId.equals(ids.b));
  });
}

test("a run in Kolkata (UTC+05:30) asks for the same 15-minute buckets", () => {
  const db = new Database();
  db.collection("videocallauditlogs").push(...auditLog());
  const [command] = lateScanFor({ ...RUN, timezone: "Asia/Kolkata", firstWindow: "2026-06-01T05:30" });
  const out = runCommand(db, command);
  // The first window starts 2026-06-01T00:00Z (05:30 local): the same events are late.
  assert.equal(out.filter((g) => g._id !== null).reduce((n, g) => n + g.events, 0), 5);
});
