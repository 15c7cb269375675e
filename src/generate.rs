//! Realistic audit events for demos and benchmarks, deterministic for a seed.
//!
//! Each call session yields the events the platform writes: per participant `join_attempt`, then
//! `join_denied` or `join_success`, possibly `permission_denied`, `connection_failed` retries
//! before `connection_established` (with `metadata.connectionTime`), and once per session
//! `call_start` and `call_end` (with a `duration` in seconds); sometimes `error_occurred`. Session
//! start times follow a daily and weekly rhythm (busy weekday office hours, quiet nights and
//! weekends); error codes have a long tail (Zipf). A share of events is malformed the ways real
//! logs are, and a share is marked late, to be written after the rest. Pure: no I/O.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Zipf};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: usize,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub users: usize,
    pub seed: u64,
}

/// One generated event and whether it is written late (after all others).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub document: Document,
    pub late: bool,
}

/// Connection failures and errors, most common first; Zipf picks from this long tail.
const ERROR_CODES: &[&str] = &[
    "ICE_TIMEOUT",
    "NETWORK_UNSTABLE",
    "MEDIA_DEVICE_BUSY",
    "DTLS_HANDSHAKE_FAILED",
    "TURN_ALLOCATION_FAILED",
    "SIGNALING_DISCONNECTED",
    "CODEC_UNSUPPORTED",
    "BANDWIDTH_LOW",
    "PEER_UNREACHABLE",
    "SDP_NEGOTIATION_FAILED",
    "AUDIO_TRACK_ENDED",
    "VIDEO_TRACK_ENDED",
    "BROWSER_UNSUPPORTED",
    "TOKEN_EXPIRED",
    "ROOM_FULL",
    "RECONNECT_LIMIT",
    "CPU_OVERLOAD",
    "SCREEN_SHARE_DENIED",
    "WS_CLOSED_1006",
    "STUN_BINDING_FAILED",
    "ICE.RESTART_FAILED",
    "media.getUserMedia.NotReadable",
    "E_UNKNOWN",
];

const MALFORMED_SHARE: f64 = 0.01;
const LATE_SHARE: f64 = 0.02;

/// Generates `plan.events` events (a whole number of sessions, cut at the count).
pub fn generate(plan: &Plan) -> Vec<Generated> {
    Events::new(plan).collect()
}

/// The events of a plan one at a time, a session's worth generated at once: the same events,
/// in the same order, as [`generate`], in the memory of one session (10M events as a `Vec` took
/// 23 GB).
pub struct Events {
    rng: ChaCha8Rng,
    users: Vec<ObjectId>,
    zipf: Option<Zipf<f64>>,
    connection_ms: Option<LogNormal<f64>>,
    call_seconds: Option<LogNormal<f64>>,
    from: DateTime<Utc>,
    span: i64,
    /// Events still to generate.
    left: usize,
    /// Generated, not yet returned.
    pending: std::collections::VecDeque<Generated>,
}

impl Events {
    pub fn new(plan: &Plan) -> Events {
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
        let users: Vec<ObjectId> = (0..plan.users.max(2))
            .map(|_| object_id(&mut rng))
            .collect();
        Events {
            rng,
            users,
            zipf: Zipf::new(ERROR_CODES.len() as f64, 1.3).ok(),
            connection_ms: LogNormal::<f64>::new(6.5, 0.6).ok(), // median ~665 ms
            call_seconds: LogNormal::<f64>::new(7.8, 0.5).ok(),  // median ~41 min
            from: plan.from,
            span: (plan.to - plan.from).num_seconds().max(1),
            left: plan.events,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// One session's events (cut at the count) into `pending`.
    fn session(&mut self) {
        let rng = &mut self.rng;
        let start = busy_instant(rng, self.from, self.span);
        let session = object_id(rng);
        let room = format!("room-{}", session.to_hex());
        let pair = [
            self.users[rng.random_range(0..self.users.len())],
            // Psychologists: the first tenth of the user pool.
            self.users[rng.random_range(0..(self.users.len() / 10).max(1))],
        ];
        let mut events = Vec::new();
        let mut joined = 0;
        for (i, user) in pair.iter().enumerate() {
            let mut t = start + Duration::seconds(rng.random_range(0..180) + i as i64 * 20);
            let next = |rng: &mut ChaCha8Rng, t: &mut DateTime<Utc>| {
                *t += Duration::milliseconds(rng.random_range(200..5000));
                *t
            };
            let event = |action: &str, at: DateTime<Utc>, user: &ObjectId| {
                doc! {
                    "sessionId": session, "userId": *user, "action": action,
                    "timestamp": bson::DateTime::from_chrono(at), "metadata": {},
                    "ipAddress": format!("198.51.100.{}", user.bytes()[11]), "userAgent": "Mozilla/5.0 (demo)",
                    "roomId": &room,
                }
            };
            events.push(event("join_attempt", t, user));
            if rng.random_bool(0.04) {
                let mut d = event("join_denied", next(rng, &mut t), user);
                d.insert(
                    "errorCode",
                    if rng.random_bool(0.5) {
                        "AUTH_DENIED"
                    } else {
                        "SESSION_NOT_FOUND"
                    },
                );
                events.push(d);
                continue;
            }
            events.push(event("join_success", next(rng, &mut t), user));
            if rng.random_bool(0.02) {
                let mut d = event("permission_denied", next(rng, &mut t), user);
                d.insert("errorCode", "MEDIA_PERMISSION_DENIED");
                events.push(d);
            }
            while rng.random_bool(0.08) {
                let mut d = event("connection_failed", next(rng, &mut t), user);
                d.insert("errorCode", pick_code(rng, self.zipf.as_ref()));
                events.push(d);
            }
            let mut d = event("connection_established", next(rng, &mut t), user);
            let ms = self
                .connection_ms
                .map_or(800.0_f64, |dist| dist.sample(rng))
                .round();
            d.insert("metadata", doc! {"connectionTime": ms});
            events.push(d);
            joined += 1;
        }
        if joined == 2 {
            let begin = start + Duration::seconds(240);
            let mut call_start = events[0].clone();
            call_start.insert("action", "call_start");
            call_start.insert("timestamp", bson::DateTime::from_chrono(begin));
            call_start.insert("metadata", doc! {});
            events.push(call_start.clone());
            if rng.random_bool(0.03) {
                let mut d = call_start.clone();
                d.insert("action", "error_occurred");
                d.insert(
                    "timestamp",
                    bson::DateTime::from_chrono(
                        begin + Duration::seconds(rng.random_range(60..1800)),
                    ),
                );
                d.insert("errorCode", pick_code(rng, self.zipf.as_ref()));
                events.push(d);
            }
            let seconds = self
                .call_seconds
                .map_or(2700.0_f64, |dist| dist.sample(rng))
                .min(4.0 * 3600.0)
                .round() as i64;
            let mut end = call_start;
            end.insert("action", "call_end");
            end.insert(
                "timestamp",
                bson::DateTime::from_chrono(begin + Duration::seconds(seconds)),
            );
            end.insert("duration", seconds);
            events.push(end);
        }
        for mut d in events {
            if self.left == 0 {
                break;
            }
            self.left -= 1;
            if rng.random_bool(MALFORMED_SHARE) {
                malform(rng, &mut d);
            }
            self.pending.push_back(Generated {
                document: d,
                late: rng.random_bool(LATE_SHARE),
            });
        }
    }
}

impl Iterator for Events {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        while self.pending.is_empty() && self.left > 0 {
            self.session();
        }
        self.pending.pop_front()
    }
}

fn object_id(rng: &mut ChaCha8Rng) -> ObjectId {
    ObjectId::from_bytes(rng.random())
}

fn pick_code(rng: &mut ChaCha8Rng, zipf: Option<&Zipf<f64>>) -> &'static str {
    let rank = zipf.map_or(1.0, |z| z.sample(rng)) as usize;
    ERROR_CODES[rank.clamp(1, ERROR_CODES.len()) - 1]
}

/// A start time in `[from, from + span)`, more likely in weekday office hours (UTC).
fn busy_instant(rng: &mut ChaCha8Rng, from: DateTime<Utc>, span: i64) -> DateTime<Utc> {
    loop {
        let t = from + Duration::seconds(rng.random_range(0..span));
        let weekday = match t.weekday() {
            Weekday::Sat => 0.35,
            Weekday::Sun => 0.2,
            _ => 1.0,
        };
        let hour = match t.hour() {
            0..=5 => 0.05,
            6..=7 => 0.3,
            8..=11 | 14..=17 => 1.0,
            12..=13 => 0.6,
            18..=20 => 0.5,
            _ => 0.15,
        };
        if rng.random_bool(weekday * hour) {
            return t;
        }
    }
}

/// The ways real audit logs go wrong.
fn malform(rng: &mut ChaCha8Rng, d: &mut Document) {
    match rng.random_range(0..6) {
        0 => {
            d.insert("action", "screen_share");
        }
        1 => {
            d.remove("timestamp");
        }
        2 => {
            let t = d
                .get_datetime("timestamp")
                .map(|t| t.to_chrono().to_rfc3339())
                .unwrap_or_default();
            d.insert("timestamp", t);
        }
        3 => {
            d.insert("duration", Bson::Int32(-rng.random_range(1..600)));
        }
        4 => {
            d.insert("errorCode", "$client.crash.v2");
        }
        _ => {
            d.remove("userId");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn plan(events: usize, seed: u64) -> Plan {
        Plan {
            events,
            from: DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            to: DateTime::parse_from_rfc3339("2026-03-16T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            users: 500,
            seed,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        assert_eq!(generate(&plan(2000, 7)), generate(&plan(2000, 7)));
        assert_ne!(generate(&plan(2000, 7)), generate(&plan(2000, 8)));
        assert_eq!(generate(&plan(2000, 7)).len(), 2000);
    }

    /// `vcmetrics generate --events 10000000` kept every event in memory and was killed at
    /// 23 GB: the events are made one session at a time.
    #[test]
    fn events_are_made_as_they_are_taken_and_a_prefix_is_a_prefix() {
        let huge = plan(usize::MAX, 7);
        let first: Vec<Generated> = Events::new(&huge).take(1000).collect();
        assert_eq!(first.len(), 1000);
        assert_eq!(first, generate(&plan(1000, 7)));
    }

    #[test]
    fn flows_rhythm_tail_and_noise_look_like_a_platform() {
        let events = generate(&plan(50_000, 1));
        let mut actions: BTreeMap<String, usize> = BTreeMap::new();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        let (mut weekday, mut weekend, mut office, mut night) = (0, 0, 0, 0);
        for e in &events {
            let d = &e.document;
            *actions
                .entry(d.get_str("action").unwrap_or("?").to_owned())
                .or_default() += 1;
            if let Ok(code) = d.get_str("errorCode") {
                *codes.entry(code.to_owned()).or_default() += 1;
            }
            if let Ok(t) = d.get_datetime("timestamp") {
                let t = t.to_chrono();
                if matches!(t.weekday(), Weekday::Sat | Weekday::Sun) {
                    weekend += 1
                } else {
                    weekday += 1
                }
                if (9..=11).contains(&t.hour()) {
                    office += 1
                } else if t.hour() <= 4 {
                    night += 1
                }
            }
        }
        // Each participant attempts to join; most connect; calls start and end in pairs.
        assert!(actions["join_attempt"] > actions["join_success"]);
        assert!(actions["connection_established"] > 10 * actions["connection_failed"].max(1) / 2);
        assert!(actions["call_start"].abs_diff(actions["call_end"]) <= 2);
        assert!(
            actions.contains_key("screen_share"),
            "malformed actions present"
        );
        // Weekdays are busier per day than weekends (5 vs 2 days), office hours than nights.
        assert!(weekday / 5 > 2 * weekend / 2, "{weekday} {weekend}");
        assert!(office > 5 * night, "{office} {night}");
        // A long tail: the top code is far more common than the median one.
        let mut counts: Vec<usize> = codes.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            counts.len() > 10 && counts[0] > 5 * counts[counts.len() / 2],
            "{codes:?}"
        );
        let late = events.iter().filter(|e| e.late).count();
        assert!((500..1500).contains(&late), "{late}");
    }
}
