// Incremental hourly runs (`vcmetrics pipelines --tick`): the same documents as whole-window runs,
// built from what is kept per minute of writes. The events' `_id`s are made at chosen write
// times, as the platform's writers make them, so when each event is seen is part of the fixture.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Aggregator } from "mingo";
import { ObjectId } from "bson";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EJSON } from "bson";
import { Database, binary, runAll, runCommand } from "./executor.mjs";
import { cases, marchEvents, metrics } from "./fixtures.mjs";

/** The commands of an incremental run at `now` with its mark at `since`, kept from `origin`. */
function tickFor({ timezone = "UTC", since, origin, now }) {
  const dir = mkdtempSync(join(tmpdir(), "vcmetrics-tick-"));
  const config = join(dir, "vcmetrics.toml");
  writeFileSync(config, `timezone = "${timezone}"\ndatabase = "app"\n`);
  const out = execFileSync(
    binary,
    ["--config", config, "pipelines", "--tick", "--period", "hourly", "--from", since, "--to", origin, "--now", now],
    { encoding: "utf8", env: { PATH: process.env.PATH } },
  );
  return EJSON.parse(out, { relaxed: true });
}

let counter = 0;
/** An ObjectId made at `at` (an ISO instant), as a writer's driver makes it. */
function madeAt(at) {
  const seconds = Math.floor(Date.parse(at) / 1000).toString(16).padStart(8, "0");
  counter += 1;
  return new ObjectId(seconds + counter.toString(16).padStart(16, "0"));
}

const seconds = (iso, s) => new Date(Date.parse(iso) + s * 1000).toISOString();

/** When each fixture event is written: a few seconds after it happened, some much later. */
const LATE = { b5: "2026-03-01T10:30:00Z", c14: "2026-03-01T12:20:00Z", c3: "2026-03-01T10:06:59Z" };
function written(events) {
  return events.map((e) => {
    const happened = e.timestamp instanceof Date ? e.timestamp.toISOString() : "2026-03-01T10:09:00Z";
    const at = LATE[e.fixture] ?? seconds(happened, 3);
    return { at, event: { ...e, _id: madeAt(at) } };
  });
}

/** Inserts the events written by `now` that are not in the audit log yet. */
function writeUntil(db, writes, now) {
  const due = writes.filter((w) => !w.done && w.at <= now);
  for (const w of due) w.done = true;
  db.insertMany("videocallauditlogs", due.map((w) => w.event));
}

function computed(db) {
  return db
    .collection("videocallmetrics")
    .map(({ _id, createdAt, updatedAt, ...rest }) => rest)
    .sort((a, b) => a.date - b.date);
}

/**
 * Runs an incremental run every `step` seconds from `from` to `to`, as the daemon does, while the
 * events are written at their write times.
 */
function ticks(db, writes, { timezone, origin, from, to, step }) {
  let since = from;
  for (let now = from; now <= to; now = seconds(now, step)) {
    writeUntil(db, writes, now);
    runAll(db, tickFor({ timezone, since, origin, now }));
    // The mark moves to the last settled minute (settle: 60 s).
    const settled = new Date(Date.parse(now) - 60_000);
    settled.setUTCSeconds(0, 0);
    if (settled.toISOString() > since) since = settled.toISOString();
  }
}

const engines = [
  ["", {}],
  [" (every conditional branch evaluated)", { eagerConditionals: true }],
];

for (const [suffix, engine] of engines) {
  for (const [c, origin] of [
    [cases[0], "2026-03-01T09:00:00Z"],
    [cases.find((x) => x.timezone === "Asia/Kolkata" && x.period === "hourly"), "2026-03-01T08:30:00Z"],
  ]) {
    test(`incremental runs every 7 minutes give the hand-computed documents: ${c.name}${suffix}`, () => {
      const db = new Database(engine);
      ticks(db, written(c.events), { timezone: c.timezone, origin, from: origin, to: "2026-03-01T13:00:00Z", step: 7 * 60 });
      const byDate = new Map(computed(db).map((d) => [d.date.getTime(), d]));
      for (const expected of c.expected) {
        assert.deepEqual(byDate.get(expected.date.getTime()), expected, expected.date.toISOString());
      }
      // Every window from the origin to the last open one has a document, zeros where nothing
      // happened.
      const last = computed(db).at(-1);
      assert.ok(last.date >= new Date("2026-03-01T12:00:00Z"));
      assert.deepEqual(last, metrics("hourly", last.date.toISOString()));
    });
  }
}

test("the open window counts what was written up to the run, settled or not", () => {
  const db = new Database();
  writeUntil(db, written(marchEvents), "2026-03-01T10:07:30Z");
  // A run at 10:07:30 with the mark at 10:00: minutes up to 10:06 are kept, the rest read whole.
  runAll(db, tickFor({ since: "2026-03-01T09:00:00Z", origin: "2026-03-01T09:00:00Z", now: "2026-03-01T10:07:30Z" }));
  const [h09, h10] = computed(db);
  // b5 (09:50) is written at 10:30: not yet.
  assert.equal(h09.completedCalls, 0);
  assert.equal(h09.totalAttempts, 2);
  // c1 (10:00), c2 (10:05) and c3 (10:06, written 10:06:59, not settled) are call ends.
  assert.equal(h10.completedCalls, 3);
  assert.equal(h10.callEndsWithoutDuration, 2);
  // u2 and u3; u6's screen_share is no counting event.
  assert.equal(h10.uniqueUsers, 2);
});

test("a slice kept again, late or twice, changes nothing; a user set only grows", () => {
  const db = new Database();
  writeUntil(db, written(marchEvents), "2026-03-01T10:40:00Z");
  const first = tickFor({ since: "2026-03-01T09:00:00Z", origin: "2026-03-01T09:00:00Z", now: "2026-03-01T10:40:00Z" });
  runAll(db, first);
  const before = computed(db);
  const keptBefore = structuredClone(db.collection("videocallmetrics_partials"));
  // The same run again (a retry, or a stale leader's), after the next one.
  runAll(db, tickFor({ since: "2026-03-01T10:39:00Z", origin: "2026-03-01T09:00:00Z", now: "2026-03-01T10:41:00Z" }));
  runAll(db, first);
  assert.deepEqual(db.collection("videocallmetrics_partials").length, keptBefore.length);
  assert.deepEqual(computed(db).map(({ updatedAt, ...d }) => d), before);
  const sets = db.collection("videocallmetrics_users");
  const size = (s) => Object.keys(s).filter((k) => k !== "_id" && k !== "at").length;
  // u1, u2, u3 and u4 by 10:40 (u5's event at 10:45 is not written yet).
  assert.equal(sets.filter((s) => s._id.w.getTime() === Date.parse("2026-03-01T10:00:00Z")).reduce((n, s) => n + size(s), 0), 4);
});

test("user keys are unique per BSON value and safe as field names", () => {
  const db = new Database();
  const at = "2026-03-01T09:10:00Z";
  const ids = ["a.b", "$x", "%2E", "a%2Eb", 7, 7.0, new ObjectId("64b000000000000000000001")];
  db.insertMany("videocallauditlogs", ids.map((userId, i) => ({ _id: madeAt(seconds(at, i)), timestamp: new Date(at), action: "join_attempt", userId })));
  runAll(db, tickFor({ since: at, origin: "2026-03-01T09:00:00Z", now: "2026-03-01T10:05:00Z" }));
  const [h09] = computed(db);
  // 7 and 7.0 are one value, as MongoDB's $group counts them; "a.b" and "a%2Eb" stay apart.
  assert.equal(h09.uniqueUsers, 6);
  const keys = db.collection("videocallmetrics_users").flatMap((s) => Object.keys(s)).filter((k) => k !== "_id" && k !== "at");
  assert.deepEqual(keys.sort(), ["n:7", "o:64b000000000000000000001", "s:%24x", "s:%252E", "s:a%252Eb", "s:a%2Eb"]);
});

test("mingo's conversions differ from MongoDB's; the executor mends them", () => {
  const pipeline = [{ $project: { _id: 0, t: { $type: "$u" }, s: { $convert: { input: "$u", to: "string", onError: "?" } } } }];
  const docs = [{ u: new ObjectId("64b000000000000000000001") }, { u: "$x" }];
  const db = new Database();
  db.insertMany("x", docs);
  const mended = runCommand(db, { database: "app", command: { aggregate: "x", pipeline } });
  assert.deepEqual(mended, [{ t: "objectId", s: "64b000000000000000000001" }, { t: "string", s: "$x" }]);
  // mingo 7.2.7 itself. When this assertion fails, mingo has been fixed and the executor's
  // mending can go.
  assert.deepEqual(new Aggregator(pipeline).run(docs), [{ t: "objectid", s: "?" }, { t: "string", s: null }]);
});
