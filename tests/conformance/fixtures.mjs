// Audit events for the conformance tests, built with small builders, and the metrics documents
// they must produce, written by hand from the metric definitions (docs/metric-definitions.md).
import { ObjectId } from "bson";

// Users: ObjectIds, as the platform's schema has them.
export const users = Object.fromEntries(
  ["u1", "u2", "u3", "u4", "u5", "u6", "u9"].map((name, i) => [name, new ObjectId(`64b000000000000000000${(i + 1).toString(16).padStart(3, "0")}`)]),
);

const base = { ipAddress: "203.0.113.7", userAgent: "Mozilla/5.0", roomId: "room-1" };

/** An audit event at an ISO instant; `extra` overrides or adds fields (undefined removes one). */
export function event(id, at, action, user, extra = {}) {
  const doc = { fixture: id, sessionId: new ObjectId("650000000000000000000001"), ...base, timestamp: new Date(at), action, userId: users[user], metadata: {} };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete doc[k];
    else doc[k] = v;
  }
  return doc;
}

// Around 2026-03-01 (a Sunday): a normal hour, an hour of malformed events, day and month edges.
export const marchEvents = [
  event("a1", "2026-02-28T23:59:59.999Z", "join_attempt", "u9"),
  event("b1", "2026-03-01T09:10:00Z", "join_attempt", "u1"),
  event("b2", "2026-03-01T09:11:00Z", "join_success", "u1"),
  event("b3", "2026-03-01T09:12:00Z", "connection_established", "u1", { metadata: { connectionTime: 120 } }),
  event("b4", "2026-03-01T09:13:00Z", "call_start", "u1"),
  event("b5", "2026-03-01T09:50:00Z", "call_end", "u1", { duration: 2220 }),
  event("b6", "2026-03-01T09:20:00Z", "join_attempt", "u2"),
  event("b7", "2026-03-01T09:21:00Z", "connection_failed", "u2", { errorCode: "ICE.TIMEOUT" }),
  event("b8", "2026-03-01T09:40:00Z", "connection_established", "u2", { metadata: { connectionTime: 300.5 } }),
  event("b9", "2026-03-01T09:59:59.999Z", "error_occurred", "u2", { errorCode: "$media.err" }),
  event("c1", "2026-03-01T10:00:00Z", "call_end", "u2", { duration: -5 }),
  event("c2", "2026-03-01T10:05:00Z", "call_end", "u3", { duration: "60" }),
  event("c3", "2026-03-01T10:06:00Z", "call_end", "u3", { duration: 60 }),
  event("c4", "2026-03-01T10:07:00Z", "screen_share", "u6", { errorCode: "NOT_COUNTED" }),
  event("c5", "2026-03-01T10:08:00Z", "join_attempt", "u6", { action: undefined }),
  event("c6", "2026-03-01T10:09:00Z", "join_attempt", "u5", { timestamp: "2026-03-01T10:09:00Z" }),
  event("c7", "2026-03-01T10:09:30Z", "join_attempt", "u5", { timestamp: undefined }),
  // An array holding a date matches the range $match; MongoDB would otherwise put it in the last window.
  event("c7b", "2026-03-01T10:09:40Z", "join_attempt", "u5", { timestamp: [new Date("2026-03-01T10:09:40Z")] }),
  event("c8", "2026-03-01T10:10:00Z", "join_attempt", "u1", { userId: undefined }),
  event("c9", "2026-03-01T10:11:00Z", "permission_denied", "u1", { errorCode: "" }),
  event("c10", "2026-03-01T10:12:00Z", "join_denied", "u3", { errorCode: 42 }),
  event("c11", "2026-03-01T10:13:00Z", "connection_established", "u3", { metadata: { connectionTime: "fast" } }),
  event("c12", "2026-03-01T10:14:00Z", "connection_established", "u4", { metadata: "x" }),
  event("c13", "2026-03-01T10:15:00Z", "connection_failed", "u4", { errorCode: "ICE.TIMEOUT" }),
  event("c14", "2026-03-01T10:20:00Z", "call_end", "u2", { duration: 30.25 }),
  event("c15", "2026-03-01T10:45:00Z", "connection_established", "u5", { metadata: { connectionTime: -3 } }),
  // The schema's audit rules broken: error_occurred without an error code (missing, empty).
  event("c16", "2026-03-01T10:16:00Z", "error_occurred", "u3"),
  event("c17", "2026-03-01T10:17:00Z", "error_occurred", "u3", { errorCode: "" }),
  // An action inside an array is not one of the nine (its user and duration are not counted
  // either); a null userId is no user.
  event("c18", "2026-03-01T10:18:00Z", "join_attempt", "u9", { action: ["join_attempt"] }),
  event("c19", "2026-03-01T10:19:00Z", "permission_denied", "u1", { userId: null }),
  event("c20", "2026-03-01T10:20:30Z", "call_end", "u9", { action: ["call_end"], duration: 100 }),
  event("d1", "2026-03-01T23:30:00Z", "call_start", "u1"),
  event("d2", "2026-03-02T00:15:00Z", "call_end", "u1", { duration: 2700.5, errorCode: "$" }),
];

// Europe/Berlin falls back on 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC.
export const autumnEvents = [
  event("f1", "2026-10-25T00:30:00Z", "call_start", "u1"), // 02:30 CEST
  event("f2", "2026-10-25T01:30:00Z", "call_end", "u1", { duration: 3600 }), // 02:30 CET
  event("f3", "2026-10-25T22:30:00Z", "join_attempt", "u2"), // 23:30 CET, still the 25th
  event("f4", "2026-10-25T23:00:00Z", "join_attempt", "u3"), // 00:00 CET on the 26th
];

const zero = {
  totalAttempts: 0, successfulConnections: 0, failedConnections: 0, totalCalls: 0, completedCalls: 0,
  totalDuration: 0, averageDuration: 0, errorCounts: {}, averageConnectionTime: 0, uniqueUsers: 0,
  joinSuccesses: 0, joinDenials: 0, permissionDenials: 0, errorsOccurred: 0, invalidEvents: 0,
  callsWithDuration: 0, totalConnectionTime: 0, connectionsWithTime: 0,
  callEndsWithoutDuration: 0, errorsWithoutCode: 0,
};

/** A metrics document: every field zero unless given. */
export function metrics(period, date, fields = {}) {
  return { period, date: new Date(date), ...zero, ...fields };
}

// Hand-computed partial sums reused below (see docs/metric-definitions.md).
// b1..b9: the 09:00 UTC hour.
const hour09 = {
  totalAttempts: 2, successfulConnections: 2, failedConnections: 1, totalCalls: 1, completedCalls: 1,
  totalDuration: 2220, callsWithDuration: 1, averageDuration: 2220,
  errorCounts: { ICE_TIMEOUT: 1, _media_err: 1 },
  totalConnectionTime: 420.5, connectionsWithTime: 2, averageConnectionTime: 210.25,
  uniqueUsers: 2, joinSuccesses: 1, errorsOccurred: 1,
};
// c1..c19 without c6/c7/c7b (no date timestamp): the 10:00 UTC hour.
const hour10 = {
  totalAttempts: 1, successfulConnections: 3, failedConnections: 1, completedCalls: 4,
  // c1 (-5) and c2 ("60") count as completed calls but not as durations.
  totalDuration: 90.25, callsWithDuration: 2, averageDuration: 45.125,
  errorCounts: { ICE_TIMEOUT: 1 },
  // c11 ("fast"), c12 (metadata not an object) and c15 (-3) have no usable connection time.
  // c4 (screen_share), c5 (no action), c18 and c20 (arrays) are invalid; c19 has no user.
  uniqueUsers: 5, joinDenials: 1, permissionDenials: 2, invalidEvents: 4,
  // c1 (-5) and c2 ("60") have no duration > 0; c16 and c17 no error code.
  errorsOccurred: 2, callEndsWithoutDuration: 2, errorsWithoutCode: 2,
};
// All of b and c, plus a1 or d1 as the window requires.
const bAndC = {
  successfulConnections: 5, failedConnections: 2, completedCalls: 5,
  totalDuration: 2310.25, callsWithDuration: 3, averageDuration: 2310.25 / 3,
  errorCounts: { ICE_TIMEOUT: 2, _media_err: 1 },
  totalConnectionTime: 420.5, connectionsWithTime: 2, averageConnectionTime: 210.25,
  joinSuccesses: 1, joinDenials: 1, permissionDenials: 2, errorsOccurred: 3, invalidEvents: 4,
  callEndsWithoutDuration: 2, errorsWithoutCode: 2,
};
const d2Only = { completedCalls: 1, totalDuration: 2700.5, callsWithDuration: 1, averageDuration: 2700.5, errorCounts: { _: 1 }, uniqueUsers: 1 };
const d1AndD2 = { ...d2Only, totalCalls: 1 };
const wholeMarch = {
  ...bAndC, totalCalls: 2, completedCalls: 6,
  totalDuration: 5010.75, callsWithDuration: 4, averageDuration: 5010.75 / 4,
  errorCounts: { ICE_TIMEOUT: 2, _media_err: 1, _: 1 },
};

/** Each case: a range as an operator would type it, and the documents it must leave behind. */
export const cases = [
  {
    name: "UTC hourly: a normal hour, an hour of malformed events, an empty hour",
    events: marchEvents, timezone: "UTC", period: "hourly", from: "2026-03-01T09:00:00Z", to: "2026-03-01T12:00:00Z",
    expected: [
      metrics("hourly", "2026-03-01T09:00:00Z", hour09),
      metrics("hourly", "2026-03-01T10:00:00Z", hour10),
      metrics("hourly", "2026-03-01T11:00:00Z"),
    ],
  },
  {
    name: "UTC daily: milliseconds before midnight belong to the day before",
    events: marchEvents, timezone: "UTC", period: "daily", from: "2026-02-28", to: "2026-03-03",
    expected: [
      metrics("daily", "2026-02-28T00:00:00Z", { totalAttempts: 1, uniqueUsers: 1 }),
      metrics("daily", "2026-03-01T00:00:00Z", { ...bAndC, totalAttempts: 3, totalCalls: 2, uniqueUsers: 5 }),
      metrics("daily", "2026-03-02T00:00:00Z", d2Only),
    ],
  },
  {
    name: "UTC weekly: weeks start on Monday, so Sunday 2026-03-01 closes the week of 02-23",
    events: marchEvents, timezone: "UTC", period: "weekly", from: "2026-02-23", to: "2026-03-09",
    expected: [
      metrics("weekly", "2026-02-23T00:00:00Z", { ...bAndC, totalAttempts: 4, totalCalls: 2, uniqueUsers: 6 }),
      metrics("weekly", "2026-03-02T00:00:00Z", d2Only),
    ],
  },
  {
    name: "UTC monthly",
    events: marchEvents, timezone: "UTC", period: "monthly", from: "2026-02-01", to: "2026-04-01",
    expected: [
      metrics("monthly", "2026-02-01T00:00:00Z", { totalAttempts: 1, uniqueUsers: 1 }),
      metrics("monthly", "2026-03-01T00:00:00Z", { ...wholeMarch, totalAttempts: 3, uniqueUsers: 5 }),
    ],
  },
  {
    name: "Asia/Kolkata hourly: hours start at :30 UTC",
    events: marchEvents, timezone: "Asia/Kolkata", period: "hourly", from: "2026-03-01T08:30:00Z", to: "2026-03-01T11:30:00Z",
    expected: [
      metrics("hourly", "2026-03-01T08:30:00Z", {
        totalAttempts: 2, successfulConnections: 1, failedConnections: 1, totalCalls: 1,
        errorCounts: { ICE_TIMEOUT: 1 }, totalConnectionTime: 120, connectionsWithTime: 1, averageConnectionTime: 120,
        uniqueUsers: 2, joinSuccesses: 1,
      }),
      metrics("hourly", "2026-03-01T09:30:00Z", {
        totalAttempts: 1, successfulConnections: 3, failedConnections: 1, completedCalls: 5,
        totalDuration: 2310.25, callsWithDuration: 3, averageDuration: 2310.25 / 3,
        errorCounts: { ICE_TIMEOUT: 1, _media_err: 1 },
        totalConnectionTime: 300.5, connectionsWithTime: 1, averageConnectionTime: 300.5,
        uniqueUsers: 4, joinDenials: 1, permissionDenials: 2, errorsOccurred: 3, invalidEvents: 4,
        callEndsWithoutDuration: 2, errorsWithoutCode: 2,
      }),
      metrics("hourly", "2026-03-01T10:30:00Z", { successfulConnections: 1, uniqueUsers: 1 }),
    ],
  },
  {
    name: "Asia/Kolkata daily: local dates on the command line, days start at 18:30 UTC",
    events: marchEvents, timezone: "Asia/Kolkata", period: "daily", from: "2026-03-01", to: "2026-03-03",
    expected: [
      metrics("daily", "2026-02-28T18:30:00Z", { ...bAndC, totalAttempts: 4, totalCalls: 1, uniqueUsers: 6 }),
      metrics("daily", "2026-03-01T18:30:00Z", d1AndD2),
    ],
  },
  {
    name: "Asia/Kolkata weekly",
    events: marchEvents, timezone: "Asia/Kolkata", period: "weekly", from: "2026-02-23", to: "2026-03-09",
    expected: [
      metrics("weekly", "2026-02-22T18:30:00Z", { ...bAndC, totalAttempts: 4, totalCalls: 1, uniqueUsers: 6 }),
      metrics("weekly", "2026-03-01T18:30:00Z", d1AndD2),
    ],
  },
  {
    name: "Asia/Kolkata monthly: 23:59 UTC on 02-28 is already March, so February is all zeros",
    events: marchEvents, timezone: "Asia/Kolkata", period: "monthly", from: "2026-02-01", to: "2026-04-01",
    expected: [
      metrics("monthly", "2026-01-31T18:30:00Z"),
      metrics("monthly", "2026-02-28T18:30:00Z", { ...wholeMarch, totalAttempts: 4, uniqueUsers: 6 }),
    ],
  },
  {
    name: "Europe/Berlin hourly across the autumn change: local 02:30 twice, in two windows",
    events: autumnEvents, timezone: "Europe/Berlin", period: "hourly", from: "2026-10-25T00:00:00Z", to: "2026-10-25T02:00:00Z",
    expected: [
      metrics("hourly", "2026-10-25T00:00:00Z", { totalCalls: 1, uniqueUsers: 1 }),
      metrics("hourly", "2026-10-25T01:00:00Z", { completedCalls: 1, totalDuration: 3600, callsWithDuration: 1, averageDuration: 3600, uniqueUsers: 1 }),
    ],
  },
  {
    name: "Europe/Berlin daily: the 25-hour day",
    events: autumnEvents, timezone: "Europe/Berlin", period: "daily", from: "2026-10-25", to: "2026-10-26",
    expected: [
      metrics("daily", "2026-10-24T22:00:00Z", {
        totalAttempts: 1, totalCalls: 1, completedCalls: 1, totalDuration: 3600, callsWithDuration: 1, averageDuration: 3600, uniqueUsers: 2,
      }),
    ],
  },
];
