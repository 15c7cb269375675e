// Prints the conformance fixtures and expectations as canonical Extended JSON, so the tests that
// run against a real MongoDB (tests/mongodb.rs) use exactly the same events and expected documents.
import { EJSON } from "bson";
import { cases, marchEvents, autumnEvents } from "./fixtures.mjs";

const sets = new Map([[marchEvents, "march"], [autumnEvents, "autumn"]]);
const out = {
  events: { march: marchEvents, autumn: autumnEvents },
  cases: cases.map(({ events, ...c }) => ({ ...c, events: sets.get(events) })),
};
process.stdout.write(EJSON.stringify(out, { relaxed: false }));
