// Rollups of archived windows (`pipelines --archive`): the scans read the audit log and, through
// a `$unionWith` on the same `$match`, the archive. Whatever part of a window's events has moved,
// the documents are the ones written by hand for the fixtures, on both engines' conditionals.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Query } from "mingo";
import { Database, commandsFor, runAll, runCommand, previewOf } from "./executor.mjs";
import { cases } from "./fixtures.mjs";

const NOW = "2026-12-01T00:00:00Z";
const ARCHIVE = "videocallauditlogs_archive";

/** The fixtures with the events `vcmetrics archive --before cut` would move in the archive. */
function archivedBefore(events, cut, engine) {
  const db = new Database(engine);
  db.insertMany("videocallauditlogs", events);
  const moved = new Query({ timestamp: { $lt: cut } });
  const audit = db.collection("videocallauditlogs");
  db.collection(ARCHIVE).push(...audit.filter((e) => moved.test(e)));
  audit.splice(0, audit.length, ...audit.filter((e) => !moved.test(e)));
  return db;
}

function computed(db) {
  return db
    .collection("videocallmetrics")
    .map(({ _id, createdAt, updatedAt, ...rest }) => rest)
    .sort((a, b) => a.date - b.date || a.period.localeCompare(b.period));
}

/** Cut points: before every event, inside the range (the median dated event), after all. */
function cuts(events) {
  const dates = events.map((e) => e.timestamp).filter((t) => t instanceof Date).sort((a, b) => a - b);
  return [new Date(0), dates[Math.floor(dates.length / 2)], new Date("2100-01-01T00:00:00Z")];
}

const engines = [
  ["", {}],
  [" (every conditional branch evaluated)", { eagerConditionals: true }],
];

for (const c of cases) {
  for (const [suffix, engine] of engines) {
    test(`${c.name}, read across audit log and archive${suffix}`, () => {
      for (const cut of cuts(c.events)) {
        const db = archivedBefore(c.events, cut, engine);
        const inArchive = db.collection(ARCHIVE).length;
        runAll(db, commandsFor({ ...c, now: NOW, archive: true }));
        assert.deepEqual(computed(db), c.expected, `cut at ${cut.toISOString()} (${inArchive} archived)`);
        assert.equal(db.collection(ARCHIVE).length, inArchive, "the archive is only read");
      }
    });
  }
}

test("every scan reads the archive on its own first $match; the preview does too", () => {
  const c = cases[0];
  const commands = commandsFor({ ...c, now: NOW, archive: true });
  const scans = commands.filter((x) => x.command.aggregate === "videocallauditlogs");
  assert.equal(scans.length, 3);
  for (const { command } of scans) {
    const [first, union] = command.pipeline;
    assert.deepEqual(union, { $unionWith: { coll: ARCHIVE, pipeline: [first] } });
  }
  const db = archivedBefore(c.events, cuts(c.events)[1], {});
  const [preview] = previewOf({ ...c, now: NOW, archive: true });
  const out = runCommand(db, preview).map(({ createdAt, updatedAt, ...rest }) => rest);
  assert.equal(db.collection("videocallmetrics").length, 0, "nothing written");
  const expected = c.expected.filter((d) => out.some((o) => o.date.getTime() === d.date.getTime()));
  assert.ok(expected.length > 0);
  assert.deepEqual(out.sort((a, b) => a.date - b.date), expected);
});
