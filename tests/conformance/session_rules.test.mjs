// The schema's session rules as the binary builds them (`vcmetrics check sessions --print`),
// executed with mingo on fixture sessions — dates, wrong types, missing fields — against counts
// worked out by hand from the rules in docs/sessions.md, once with every conditional branch evaluated
// (DocumentDB 0.108 evaluates both branches of $cond): the expressions must never apply an
// operator to a value of the wrong type.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EJSON, ObjectId } from "bson";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Database, binary, runCommand } from "./executor.mjs";

function rulesFor(from, to) {
  const dir = mkdtempSync(join(tmpdir(), "vcmetrics-conformance-"));
  const file = join(dir, "vcmetrics.toml");
  writeFileSync(file, 'database = "app"\n');
  const out = execFileSync(binary, ["--config", file, "check", "sessions", "--print", "--from", from, "--to", to], {
    encoding: "utf8",
    env: { PATH: process.env.PATH },
  });
  return EJSON.parse(out, { relaxed: true });
}

const t = (iso) => new Date(iso);
const day = "2026-03-05T";
let n = 0;
const session = (fields) => ({ _id: new ObjectId((++n).toString(16).padStart(24, "0")), status: "Completed", sessionDate: t(`${day}10:00:00Z`), ...fields });
const call = (minutes, callDuration) => ({
  videoCallStarted: t(`${day}10:00:00Z`),
  videoCallEnded: new Date(Date.parse(`${day}10:00:00Z`) + minutes * 60000),
  ...(callDuration === undefined ? {} : { callDuration }),
});

const sessions = [
  // call_duration: 45 minutes of call.
  session({ ...call(45, 45) }), // fine
  session({ ...call(45, 46) }), // one minute off: fine
  session({ ...call(45, 44.0) }), // fine
  session({ ...call(45, 30) }), // broken
  session({ ...call(45, "45") }), // a string: broken
  session({ ...call(45) }), // missing on an ended call: broken
  session({ ...call(45, null) }), // null: broken
  session({ ...call(45.5, 46) }), // 45.5 rounds to 46: fine
  session({ ...call(44.5, 46) }), // 44.5 rounds half up to 45, as Math.round: fine
  session({ videoCallStarted: t(`${day}10:00:00Z`), videoCallEnded: null, callDuration: 0 }), // not ended: n/a
  session({ videoCallStarted: "10:00", videoCallEnded: t(`${day}10:45:00Z`), callDuration: 3 }), // start not a date: n/a
  session({ status: "In Progress", videoCallStarted: t(`${day}10:00:00Z`), callDuration: "x" }), // n/a
  // meeting_link.
  session({ meetingLink: "room-64b0000000000000000000ab-1772359200000" }), // fine
  session({ meetingLink: "room-abc" }), // fine
  session({ meetingLink: null }), // not set: fine
  session({ meetingLink: "https://meet.example/x" }), // broken
  session({ meetingLink: "room-ABC" }), // upper case: broken
  session({ meetingLink: 42 }), // not a string: broken
  session({ meetingLink: ["room-abc"] }), // not a string: broken
  session({ meetingLink: "" }), // empty: broken
  session({ meetingLink: "room-abc\n" }), // a trailing newline (PCRE's $ would allow it): broken
  // Outside the range, or without a status (still in the range: the $nin branch).
  session({ sessionDate: t("2026-02-01T00:00:00Z"), meetingLink: "bad" }),
  session({ status: undefined, meetingLink: "bad-too", ...call(10, 99) }),
];

for (const [suffix, engine] of [["", {}], [" (every conditional branch evaluated)", { eagerConditionals: true }]]) {
  test("session rules count what the schema's hooks would refuse" + suffix, () => {
    const db = new Database(engine);
    db.collection("sessions").push(...sessions);
    const commands = rulesFor("2026-03-01", "2026-03-08");
    const counts = Object.fromEntries(commands.map((c) => [c.rule, runCommand(db, c)[0]?.n ?? 0]));
    // 30, "45", missing, null, and the session without a status (10 minutes, 99).
    assert.equal(counts.call_duration, 5);
    // The URL, upper case, 42, an array, "", the newline, and "bad-too" (no status, in range).
    assert.equal(counts.meeting_link, 7);
  });
}
