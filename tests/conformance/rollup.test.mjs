// Pipeline conformance: vcmetrics' own pipelines/ files, bound by the vcmetrics binary exactly as
// a run binds them (`vcmetrics pipelines`), executed with mingo on fixture audit events, compared
// with metrics documents written by hand from the metric definitions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Aggregator } from "mingo";
import { Database, bucketAsDocumented, commandsFor, runAll, runCommand, previewOf } from "./executor.mjs";
import { cases, event, marchEvents, metrics } from "./fixtures.mjs";

const NOW = "2026-12-01T00:00:00Z";
const LATER = "2026-12-02T00:00:00Z";

/** The metrics documents of the collection without _id, createdAt, updatedAt, oldest first. */
function computed(db) {
  return db
    .collection("videocallmetrics")
    .map(({ _id, createdAt, updatedAt, ...rest }) => rest)
    .sort((a, b) => a.date - b.date || a.period.localeCompare(b.period));
}

/** Deep equality, with averages of doubles compared to 1e-9 relative. */
function assertSameMetrics(actual, expected) {
  assert.equal(actual.length, expected.length, `window count: ${JSON.stringify(actual.map((d) => d.date))}`);
  for (let i = 0; i < expected.length; i++) {
    const [a, e] = [actual[i], expected[i]];
    assert.deepEqual(Object.keys(a).sort(), Object.keys(e).sort(), `fields of ${e.date.toISOString()}`);
    for (const key of Object.keys(e)) {
      const where = `${e.period} ${e.date.toISOString()} ${key}`;
      if (typeof e[key] === "number" && !Number.isInteger(e[key])) {
        assert.ok(Math.abs(a[key] - e[key]) <= 1e-9 * Math.abs(e[key]), `${where}: ${a[key]} != ${e[key]}`);
      } else {
        assert.deepEqual(a[key], e[key], where);
      }
    }
  }
}

function setUp(events, engine = {}) {
  const db = new Database(engine);
  db.insertMany("videocallauditlogs", events);
  return db;
}

// Every case twice: with MongoDB's lazy conditionals, and with every branch of every $cond and
// $switch evaluated (DocumentDB 0.108 evaluates both branches of $cond): the pipelines must not
// depend on which branches an engine evaluates.
const engines = [
  ["", {}],
  [" (every conditional branch evaluated)", { eagerConditionals: true }],
];
for (const c of cases) {
  for (const [suffix, engine] of engines) {
    test(c.name + suffix, () => {
      const db = setUp(c.events, engine);
      runAll(db, commandsFor({ ...c, now: NOW }));
      assertSameMetrics(computed(db), c.expected);
      for (const doc of db.collection("videocallmetrics")) {
        assert.deepEqual(doc.createdAt, new Date(NOW));
        assert.deepEqual(doc.updatedAt, new Date(NOW));
      }
    });
  }
}

test("the eager-conditional engine fails where a not-taken branch fails, as DocumentDB 0.108 does", () => {
  const pipeline = [{ $project: { n: { $cond: [false, { $strLenCP: "$a" }, 1] } } }];
  const run = (engine) => {
    const db = setUp([{ a: null }], engine);
    return runCommand(db, { database: "app", command: { aggregate: "videocallauditlogs", pipeline } });
  };
  assert.deepEqual(run({}).map(({ n }) => n), [1]);
  assert.throws(() => run({ eagerConditionals: true }), /strLenCP/);
});

const hourly = { timezone: "UTC", period: "hourly", from: "2026-03-01T09:00:00Z", to: "2026-03-01T12:00:00Z" };

test("a re-run replaces every computed field, keeps createdAt and moves updatedAt", () => {
  const db = setUp(marchEvents);
  runAll(db, commandsFor({ ...hourly, now: NOW }));
  const snapshot = () => db.collection("videocallmetrics").map((d) => ({ ...structuredClone(d), _id: d._id.toHexString() }));
  const first = snapshot();
  runAll(db, commandsFor({ ...hourly, now: LATER }));
  const second = snapshot();
  assert.equal(second.length, first.length, "no duplicate documents");
  for (let i = 0; i < first.length; i++) {
    const { updatedAt: u1, ...rest1 } = first[i];
    const { updatedAt: u2, ...rest2 } = second[i];
    assert.deepEqual(rest2, rest1);
    assert.deepEqual(u2, new Date(LATER));
    assert.deepEqual(second[i].createdAt, new Date(NOW));
  }
});

test("an error code that no longer occurs disappears, and an emptied window goes back to zeros", () => {
  const db = setUp(marchEvents);
  runAll(db, commandsFor({ ...hourly, now: NOW }));
  // Remove the ICE.TIMEOUT events and everything of the 09:00 hour; a merge of only the new
  // fields (whenMatched "merge" on partial documents) would leave both stale.
  const audit = db.collection("videocallauditlogs");
  const keep = audit.filter((e) => e.errorCode !== "ICE.TIMEOUT" && !String(e.fixture).startsWith("b"));
  audit.splice(0, audit.length, ...keep);
  runAll(db, commandsFor({ ...hourly, now: LATER }));
  const [h09, h10] = computed(db);
  assert.deepEqual(h09, metrics("hourly", "2026-03-01T09:00:00Z"));
  assert.deepEqual(h10.errorCounts, {});
  assert.equal(h10.failedConnections, 0);
});

test("the preview (dry-run) returns the documents a run would merge and writes nothing", () => {
  const db = setUp(marchEvents);
  const [preview] = previewOf({ ...hourly, now: NOW });
  const out = runCommand(db, preview).map(({ createdAt, updatedAt, ...rest }) => rest);
  assert.equal(db.collection("videocallmetrics").length, 0, "nothing written");
  // Without seed documents the empty 11:00 window is absent; vcmetrics zero-fills it (rollup.rs).
  assertSameMetrics(out, cases[0].expected.slice(0, 2));
});

test("six commands per chunk: at most chunk_windows hourly windows per chunk, seeds first", () => {
  const commands = commandsFor({ timezone: "UTC", period: "hourly", from: "2026-03-01", to: "2026-03-15", now: NOW });
  const chunk = ["update", "aggregate", "aggregate", "aggregate", "aggregate", "delete"];
  assert.deepEqual(commands.map((c) => Object.keys(c.command)[0]), [...chunk, ...chunk]);
  assert.equal(commands[0].command.updates.length, 168);
  assert.equal(commands[6].command.updates.length, 168);
  // Hours are equally long: the window start is arithmetic on the chunk's start, no table.
  assert.deepEqual(Object.keys(commands[1].command.pipeline[1].$group._id.w), ["$subtract"]);
  assert.deepEqual(commands[1].command.pipeline[0], {
    $match: {
      timestamp: { $gte: new Date("2026-03-01T00:00:00Z"), $lt: new Date("2026-03-08T00:00:00Z"), $not: { $type: "array" } },
    },
  });
});

/** The chunk's commands by role: seed, the three scans, finish, cleanup. */
function roles(commands) {
  assert.equal(commands.length, 6, "one chunk");
  const [seed, counts, users, values, finish, cleanup] = commands;
  return { seed, counts, users, values, finish, cleanup };
}

test("the three scans may run in any order; the staged documents are gone afterwards", () => {
  const scans = ["counts", "users", "values"];
  const orders = scans.flatMap((a) => scans.filter((b) => b !== a).map((b) => [a, b, scans.find((c) => c !== a && c !== b)]));
  assert.equal(orders.length, 6);
  for (const order of orders) {
    const db = setUp(marchEvents);
    const c = roles(commandsFor({ ...hourly, now: NOW }));
    for (const role of ["seed", ...order, "finish", "cleanup"]) runCommand(db, c[role]);
    assertSameMetrics(computed(db), cases[0].expected);
    assert.equal(db.collection("videocallmetrics_staging").length, 0, `staging empty after ${order}`);
  }
});

test("runs interleaved on one staging collection take only their own staged documents", () => {
  const db = setUp(marchEvents);
  const [hourlyCase, dailyCase] = cases;
  const a = roles(commandsFor({ ...hourlyCase, now: NOW }));
  const b = roles(commandsFor({ ...dailyCase, now: NOW }));
  for (const c of [a.seed, b.seed, a.counts, b.values, b.counts, b.users, a.users, a.values]) runCommand(db, c);
  const staging = () => db.collection("videocallmetrics_staging");
  const runs = () => new Set(staging().map((d) => d._id.r.toHexString()));
  assert.equal(runs().size, 2, "both runs staged");
  for (const c of [b.finish, a.finish, a.cleanup]) runCommand(db, c);
  assert.deepEqual([...runs()], [b.finish.command.pipeline[0].$match["_id.r"].toHexString()], "only b's remain");
  runCommand(db, b.cleanup);
  assert.equal(staging().length, 0);
  assertSameMetrics(computed(db).filter((d) => d.period === "hourly"), hourlyCase.expected);
  assertSameMetrics(computed(db).filter((d) => d.period === "daily"), dailyCase.expected);
});

test("unequal windows (a 24- and a 25-hour day) find their start in a table of hour quanta", () => {
  const berlin = { timezone: "Europe/Berlin", period: "daily", from: "2026-10-24", to: "2026-10-26", now: NOW };
  const [, counts, users, values] = commandsFor(berlin);
  for (const scan of [counts, users, values]) {
    const [table] = scan.command.pipeline[1].$group._id.w.$arrayElemAt;
    assert.equal(table.length, 24 + 25);
  }
});

test("open and future windows are not part of a run's range", () => {
  const commands = commandsFor({ ...hourly, now: "2026-03-01T10:30:00Z" });
  assert.deepEqual(commands[0].command.updates.map((u) => u.q.date), [new Date("2026-03-01T09:00:00Z")]);
});

test("mingo's $bucket differs at boundaries; the executor's documented form does not", () => {
  const [b0, b1, b2] = ["2026-03-01T09:00:00Z", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"].map((t) => new Date(t));
  const spec = { groupBy: "$t", boundaries: [b0, b1, b2], output: { n: { $sum: 1 } } };
  const docs = [{ t: b0 }, { t: b1 }, { t: new Date("2026-03-01T10:30:00Z") }];
  const ids = (stages) => new Aggregator(stages).run(docs).map((d) => [d._id.toISOString(), d.n]);
  // MongoDB: lower bound inclusive, so the 10:00 value is in the 10:00 bucket.
  assert.deepEqual(ids(bucketAsDocumented(spec)), [[b0.toISOString(), 1], [b1.toISOString(), 2]]);
  // mingo 7.2.7 puts it in the 09:00 bucket. When this assertion fails, mingo has been fixed and
  // the executor can run $bucket as it is.
  assert.deepEqual(ids([{ $bucket: spec }]), [[b0.toISOString(), 2], [b1.toISOString(), 1]]);
});

// #22: the stored sums do not depend on the order in which events are added up (a sharded
// cluster combines the shards' partial sums in a different order on each run). Each duration and
// connection time is summed as a whole number of microseconds, exact in a double, and divided
// once at the end. As plain doubles, 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit.
test("sums are bit-identical whatever the order of the events", () => {
  const at = (m) => `2026-03-01T09:${String(m).padStart(2, "0")}:00Z`;
  const values = [0.1, 0.2, 0.3];
  assert.notEqual(values.reduce((s, v) => s + v, 0), [...values].reverse().reduce((s, v) => s + v, 0));
  const events = values.flatMap((v, i) => [
    event(`d${i}`, at(i), "call_end", "u1", { duration: v }),
    event(`t${i}`, at(i), "connection_established", "u2", { metadata: { connectionTime: v } }),
  ]);
  const run = (ordered) => {
    const db = setUp(ordered);
    runAll(db, commandsFor({ ...hourly, now: NOW }));
    return computed(db).find((d) => d.date.getTime() === Date.parse("2026-03-01T09:00:00Z"));
  };
  const forward = run(events);
  const backward = run([...events].reverse());
  for (const key of ["totalDuration", "averageDuration", "totalConnectionTime", "averageConnectionTime"]) {
    assert.ok(Object.is(forward[key], backward[key]), `${key}: ${forward[key]} vs ${backward[key]}`);
  }
  assert.equal(forward.totalDuration, 0.6);
  assert.equal(forward.totalConnectionTime, 0.6);
  assert.equal(forward.averageDuration, 0.6 / 3);
});

// #22: each value is rounded once, to the microsecond (half up), before it is summed.
test("durations and connection times are summed in whole microseconds", () => {
  const at = (m) => `2026-03-01T09:${String(m).padStart(2, "0")}:00Z`;
  const db = setUp([
    event("a", at(1), "call_end", "u1", { duration: 12.3456785 }),
    event("b", at(2), "call_end", "u1", { duration: 0.0000004 }),
    event("c", at(3), "connection_established", "u2", { metadata: { connectionTime: 250.0004 } }),
    event("d", at(4), "connection_established", "u2", { metadata: { connectionTime: 0.0005 } }),
  ]);
  runAll(db, commandsFor({ ...hourly, now: NOW }));
  const hour = computed(db).find((d) => d.date.getTime() === Date.parse("2026-03-01T09:00:00Z"));
  assert.equal(hour.totalDuration, 12.345679);
  assert.equal(hour.callsWithDuration, 2);
  assert.equal(hour.totalConnectionTime, 250.001);
  assert.equal(hour.connectionsWithTime, 2);
});
