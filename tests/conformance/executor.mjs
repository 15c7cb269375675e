// Executes the commands `vcmetrics pipelines` prints against an in-memory database with mingo,
// the way a MongoDB server would run them. Only what vcmetrics sends is supported — an `update`
// of upserts with $setOnInsert/$set, an `aggregate`, and a `delete` of every match of one filter —
// and anything else throws, so a new kind of command cannot slip past these tests unexecuted.
//
// Where mingo differs from MongoDB's documented behaviour the executor follows MongoDB, and says
// so here:
// - $merge: MongoDB requires a unique index on the `on` fields and fails otherwise; mingo checks
//   uniqueness of the target collection's entries itself, which is the same guarantee.
// - $bucket: MongoDB defines each bucket as [lower, upper) and documents the stage as a $group on
//   a $switch over the boundaries followed by a $sort. mingo 7.2.7's own $bucket places a value
//   equal to a boundary in the bucket *below* it (it uses an insertion index), and every value
//   vcmetrics buckets is a window start, i.e. a boundary. So the executor runs the documented
//   equivalent instead (`bucketAsDocumented`); test "mingo's $bucket differs at boundaries" pins it.
// - Conditionals: MongoDB evaluates only the branch of `$cond`/`$switch` that is taken; DocumentDB
//   0.108 evaluates both branches of `$cond` (measured there: `{$cond: [false, {$strLenCP: "$a"},
//   1]}` fails on a null `a`). A `Database` made with `{ eagerConditionals: true }` evaluates every
//   branch of `$cond` and `$switch` (and mingo's strict operators throw as MongoDB's do), so a
//   pipeline whose success depends on lazy conditionals fails here instead of on that engine.
// - Update statements: mingo has no server-side upsert; upsert is implemented below per MongoDB's
//   rules (the new document takes the query's equality fields, then $setOnInsert and $set).
// - `$type` and `$convert` to string: mingo 7.2.7's `$type` of a bson ObjectId is "objectid"
//   (MongoDB: "objectId"); its `$convert` to string fails on an ObjectId (MongoDB gives its 24 hex
//   digits, as DocumentDB 0.108 does) and turns a string that starts with "$" into null (it reads
//   the value as a field path; MongoDB returns the string). The user sets key users by these, so
//   both are mended below for those inputs only; test "mingo's conversions" pins the difference.
import { Aggregator, Query } from "mingo";
import { Aggregator as BareAggregator } from "mingo/aggregator";
import { Context, evalExpr } from "mingo/core";
import * as accumulatorOperators from "mingo/operators/accumulator";
import * as expressionOperators from "mingo/operators/expression";
import * as pipelineOperators from "mingo/operators/pipeline";
import * as projectionOperators from "mingo/operators/projection";
import * as queryOperators from "mingo/operators/query";
import * as windowOperators from "mingo/operators/window";
import { EJSON, ObjectId } from "bson";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The vcmetrics binary: set by the Rust test that runs this suite, else the debug build. */
export const binary = process.env.VCMETRICS_BIN ?? join(repoRoot, "target", "debug", "vcmetrics");

/** MongoDB's truthiness: false, null, missing and numeric zero are false. */
function truthy(v) {
  return !(v === false || v === null || v === undefined || v === 0);
}

/** `$cond` evaluating both branches before choosing, as DocumentDB 0.108 does. */
function eagerCond(obj, expr, options) {
  const [ifExpr, thenExpr, elseExpr] = Array.isArray(expr) ? expr : [expr.if, expr.then, expr.else];
  const [condition, whenTrue, whenFalse] = [ifExpr, thenExpr, elseExpr].map((e) => evalExpr(obj, e, options));
  return truthy(condition) ? whenTrue : whenFalse;
}

/** `$switch` evaluating every case, every branch and the default before choosing. */
function eagerSwitch(obj, expr, options) {
  const evaluated = expr.branches.map((b) => [evalExpr(obj, b.case, options), evalExpr(obj, b.then, options)]);
  const otherwise = "default" in expr ? evalExpr(obj, expr.default, options) : undefined;
  const taken = evaluated.find(([condition]) => truthy(condition));
  if (taken) return taken[1];
  if (!("default" in expr)) throw new Error("$switch could not find a matching branch for an input, and no default was specified.");
  return otherwise;
}

/** `$type` as MongoDB names an ObjectId's type. */
function mongoType(obj, expr, options) {
  const value = evalExpr(obj, Array.isArray(expr) ? expr[0] : expr, options);
  return value instanceof ObjectId ? "objectId" : expressionOperators.$type(obj, expr, options);
}

/** `$convert` turning an ObjectId into its hex string, as MongoDB does. */
function mongoConvert(obj, expr, options) {
  if (expr.to === "string") {
    const value = evalExpr(obj, expr.input, options);
    if (value instanceof ObjectId) return value.toHexString();
    if (typeof value === "string") return value;
  }
  return expressionOperators.$convert(obj, expr, options);
}

const OBJECT_ID_FIXES = { $type: mongoType, $convert: mongoConvert };

const LAZY_CONTEXT = Context.init({
  accumulator: accumulatorOperators,
  expression: { ...expressionOperators, ...OBJECT_ID_FIXES },
  pipeline: pipelineOperators,
  projection: projectionOperators,
  query: queryOperators,
  window: windowOperators,
});

const EAGER_CONTEXT = Context.init({
  accumulator: accumulatorOperators,
  expression: { ...expressionOperators, ...OBJECT_ID_FIXES, $cond: eagerCond, $switch: eagerSwitch },
  pipeline: pipelineOperators,
  projection: projectionOperators,
  query: queryOperators,
  window: windowOperators,
});

/** A deep copy that keeps ObjectIds ObjectIds (`structuredClone` makes them plain objects). */
function copy(value) {
  if (value instanceof ObjectId) return new ObjectId(value.id);
  if (value instanceof Date) return new Date(value);
  if (Array.isArray(value)) return value.map(copy);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, copy(v)]));
  return value;
}

export class Database {
  /** `eagerConditionals`: evaluate every branch of `$cond`/`$switch` (DocumentDB 0.108). */
  constructor({ eagerConditionals = false } = {}) {
    this.collections = new Map();
    this.eagerConditionals = eagerConditionals;
  }
  collection(name) {
    if (!this.collections.has(name)) this.collections.set(name, []);
    return this.collections.get(name);
  }
  insertMany(name, docs) {
    for (const d of docs) this.collection(name).push({ _id: new ObjectId(), ...copy(d) });
  }
}

/** Asks the real binary for the commands of a range, exactly as a run would bind them. */
export function commandsFor({ timezone = "UTC", period, from, to, now, dryRun = false, archive = false }) {
  const dir = mkdtempSync(join(tmpdir(), "vcmetrics-conformance-"));
  const config = join(dir, "vcmetrics.toml");
  writeFileSync(config, `timezone = "${timezone}"\ndatabase = "app"\n`);
  const out = execFileSync(
    binary,
    // --force: the fixtures lie before the retention horizon of NOW; the guard has its own test.
    [
      "--config", config, "pipelines", "--force", "--period", period, "--from", from, "--to", to, "--now", now,
      ...(dryRun ? ["--dry-run"] : []),
      ...(archive ? ["--archive"] : []),
    ],
    { encoding: "utf8", env: { PATH: process.env.PATH } },
  );
  return EJSON.parse(out, { relaxed: true });
}

/**
 * Asks the real binary for the late-event scans a daemon run at `now` sends (`pipelines
 * --late-scan`): the period's mark at `since`, its windows starting at `firstWindow`.
 */
export function lateScanFor({ timezone = "UTC", period, since, firstWindow, now, config = "" }) {
  const dir = mkdtempSync(join(tmpdir(), "vcmetrics-conformance-"));
  const file = join(dir, "vcmetrics.toml");
  writeFileSync(file, `timezone = "${timezone}"\ndatabase = "app"\n${config}`);
  const out = execFileSync(
    binary,
    ["--config", file, "pipelines", "--late-scan", "--period", period, "--from", since, "--to", firstWindow, "--now", now],
    { encoding: "utf8", env: { PATH: process.env.PATH } },
  );
  return EJSON.parse(out, { relaxed: true });
}

function runUpdate(db, cmd) {
  const coll = db.collection(cmd.update);
  for (const { q, u, upsert, ...rest } of cmd.updates) {
    if (Object.keys(rest).length) throw new Error(`unsupported update options ${Object.keys(rest)}`);
    const ops = Object.keys(u);
    if (ops.some((op) => op !== "$setOnInsert" && op !== "$set")) throw new Error(`unsupported update ${ops}`);
    const matches = new Query(q).find(coll).all();
    if (matches.length > 1) throw new Error("update statements target one window each");
    if (matches.length === 1) {
      Object.assign(matches[0], structuredClone(u.$set ?? {}));
    } else if (upsert) {
      coll.push({ _id: new ObjectId(), ...structuredClone(q), ...structuredClone(u.$setOnInsert ?? {}), ...structuredClone(u.$set ?? {}) });
    }
  }
}

/** `$bucket` as MongoDB documents it: `$group` on a `$switch` of the boundaries, then `$sort`. */
export function bucketAsDocumented({ groupBy, boundaries, default: otherwise, output = { count: { $sum: 1 } } }) {
  const branches = boundaries.slice(0, -1).map((lower, i) => ({
    case: { $and: [{ $gte: [groupBy, { $literal: lower }] }, { $lt: [groupBy, { $literal: boundaries[i + 1] }] }] },
    then: { $literal: lower },
  }));
  const id = { $switch: otherwise === undefined ? { branches } : { branches, default: otherwise } };
  return [{ $group: { _id: id, ...output } }, { $sort: { _id: 1 } }];
}

function runAggregate(db, cmd) {
  const pipeline = cmd.pipeline.flatMap((stage) => (stage.$bucket ? bucketAsDocumented(stage.$bucket) : [stage]));
  const options = { collectionResolver: (name) => db.collection(name) };
  const agg = db.eagerConditionals
    ? new BareAggregator(pipeline, { ...options, context: EAGER_CONTEXT, failOnError: true })
    : new BareAggregator(pipeline, { ...options, context: LAZY_CONTEXT });
  return agg.run(db.collection(cmd.aggregate));
}

function runDelete(db, cmd) {
  const coll = db.collection(cmd.delete);
  for (const { q, limit, ...rest } of cmd.deletes) {
    if (limit !== 0 || Object.keys(rest).length) throw new Error("only deletes of every match are supported");
    const query = new Query(q);
    coll.splice(0, coll.length, ...coll.filter((d) => !query.test(d)));
  }
}

/** Runs one printed command; returns the aggregate's output documents (none after $merge). */
export function runCommand(db, { database, command }) {
  if (database !== "app") throw new Error(`command for database ${database}`);
  if (command.update) return runUpdate(db, command);
  if (command.aggregate) return runAggregate(db, command);
  if (command.delete) return runDelete(db, command);
  throw new Error(`unsupported command ${Object.keys(command)[0]}`);
}

export function runAll(db, commands) {
  for (const c of commands) runCommand(db, c);
}

/** The read-only aggregates of a range (`pipelines --dry-run`): what dry-run and verify send. */
export function previewOf(range) {
  const commands = commandsFor({ ...range, dryRun: true });
  for (const c of commands) {
    if (!c.command.aggregate) throw new Error(`a preview sends only aggregates, not ${Object.keys(c.command)[0]}`);
    if (c.command.pipeline.some((stage) => "$merge" in stage || "$out" in stage)) throw new Error("a preview writes nothing");
  }
  return commands;
}
