//! Configuration: a TOML file plus environment overrides, validated once into a typed [`Config`]
//! before anything runs.
//!
//! Precedence: environment variable, then file, then default. Unknown keys are rejected; every
//! problem names its key (or environment variable), and all of them are reported together. The
//! connection string's password never appears in an error or a log line (see [`redact_uri`]).

pub mod effective;
mod keys;
mod problem;
mod read;
mod sources;
mod values;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;

use crate::window::{Calendar, Period, Schedule};
pub use keys::{ARCHIVE_KEYS, LATE_EVENTS_KEYS, PERIOD_KEYS, TOP_LEVEL_KEYS};
pub use problem::{ConfigError, Problem};
pub use read::{from_toml, load, load_traced, validate, validate_traced, Env, ProcessEnv};
pub use sources::{Origin, Origins};
use web::WebConfig;

/// The audit log's TTL the platform's schema declares: 180 days.
pub const SCHEMA_AUDIT_TTL: Duration = Duration::from_secs(15_552_000);
/// `aggregate_timeout`'s default.
pub const DEFAULT_AGGREGATE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MONGODB_URI: &str = "mongodb://localhost:27017";
/// What an operator sets to point vcmetrics at another server, for "cannot reach" messages.
pub const WHERE_TO_SET_URI: &str =
    "set MONGODB_URI (or mongodb_uri in the --config file) to where MongoDB runs";
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9465);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mongodb_uri: String,
    pub database: String,
    pub audit_collection: String,
    pub metrics_collection: String,
    /// Where the three scans of a rollup chunk leave their per-window documents for a moment.
    pub staging_collection: String,
    /// Where incremental runs keep each minute's counts and sums per 15-minute bucket.
    pub partials_collection: String,
    /// Where incremental runs keep each window's distinct users, as field names.
    pub user_sets_collection: String,
    /// The platform's sessions (`migrate` creates its indexes).
    pub sessions_collection: String,
    pub calendar: Calendar,
    /// The TTL `migrate` gives the audit log's `timestamp` index.
    pub audit_ttl: Duration,
    /// Overrides the retention horizon otherwise read from the audit log's TTL index.
    pub audit_retention: Option<Duration>,
    /// Indexed by [`Period::index`].
    pub periods: [PeriodConfig; 4],
    /// The daemon's own small collection: watermarks and the leader lease.
    pub state_collection: String,
    /// Where a fresh deployment (no watermark) starts catching up; default: the start of the
    /// current month's first window, never before the retention horizon.
    pub start_from: Option<DateTime<Utc>>,
    pub lease_ttl: Duration,
    /// This replica's name in the lease document.
    pub instance_id: String,
    /// How long a running aggregate may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// The endpoint's web configuration file (`web_config_file`), if any.
    pub web_config_file: Option<PathBuf>,
    /// TLS and basic authentication of the endpoint, read from that file at load.
    pub web: Option<WebConfig>,
    /// Error codes exported per window before the rest are summed under `other`.
    pub top_error_codes: usize,
    /// How many chunks of one run are rolled up at once (each runs two aggregates).
    pub chunks_in_flight: usize,
    /// How often the exported call metrics are re-read besides after each run.
    pub metrics_refresh: Duration,
    /// The server-side time limit (`maxTimeMS`) of every aggregate vcmetrics sends.
    pub aggregate_timeout: Duration,
    /// Finding events written late by their `_id`s (`[late_events]`).
    pub late_events: LateEventsConfig,
    /// An active video call that started longer ago than this is counted as stuck.
    pub stuck_call_after: Duration,
    /// The session rule gauges count sessions whose `sessionDate` is this recent.
    pub session_rules_lookback: Duration,
    /// Moving old audit events into an archive before the TTL deletes them (`[archive]`).
    pub archive: ArchiveConfig,
}

/// `[archive]`: where `vcmetrics archive` moves audit events before the audit log's TTL deletes
/// them, and when the daemon runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// The archive collection (`archive.collection`).
    pub collection: String,
    /// The archive's database, when it is not `database` (same cluster).
    pub database: Option<String>,
    /// Events older than this are archived; default: the audit log's TTL minus 7 days (minus
    /// half the TTL when it is 14 days or less). Never as long as the TTL.
    pub after: Option<Duration>,
    /// A TTL for the archive's `timestamp` index (`migrate` sets it); none by default.
    pub retention: Option<Duration>,
    /// When the daemon's leader archives; never unless configured.
    pub schedule: Option<Schedule>,
    /// Events copied, confirmed and deleted per batch.
    pub batch_size: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            collection: "videocallauditlogs_archive".to_owned(),
            database: None,
            after: None,
            retention: None,
            schedule: None,
            batch_size: 1000,
        }
    }
}

/// `[late_events]`: each run also looks at the audit events written since its previous run and
/// refreshes the older windows they fall in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateEventsConfig {
    pub enabled: bool,
    /// At most this many events written since the last run are looked at per run and period;
    /// the rest in the next runs.
    pub scan_limit: usize,
    /// Events whose `_id` is younger than this are left for the next run: writers' clocks and
    /// in-flight inserts get this much slack.
    pub settle: Duration,
}

impl Default for LateEventsConfig {
    fn default() -> Self {
        LateEventsConfig {
            enabled: true,
            scan_limit: 100_000,
            settle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodConfig {
    /// At most this many windows go into one chunk (recompute, verify).
    pub chunk_windows: usize,
    /// When the daemon refreshes this period (6-field cron: sec min hour dom month dow), in the
    /// configured time zone.
    pub schedule: Schedule,
    /// How many closed windows every run refreshes again, for late events.
    pub lookback: usize,
    /// Whether runs also refresh the window that is still open.
    pub include_open: bool,
    /// At most this many closed windows in one run (one chunk; the open window comes on top
    /// once there is no backlog); a backlog takes several runs.
    pub max_windows_per_run: usize,
    /// Whether runs add the events written since the previous run to partial sums instead of
    /// reading whole windows again (hourly only; see docs/design.md, "Incremental runs").
    pub incremental: bool,
}

impl Config {
    pub fn period(&self, period: Period) -> &PeriodConfig {
        &self.periods[period.index()]
    }

    /// Settings that are valid but lose something an operator probably wants, in words for the
    /// start-up log: a period that reads no closed window again (`lookback = 0`, the long
    /// periods' default) relies on the late-event scan for late writes, so with
    /// `late_events.enabled = false` they are never counted until a recompute.
    pub fn cautions(&self) -> Vec<String> {
        if self.late_events.enabled {
            return Vec::new();
        }
        Period::ALL
            .into_iter()
            .filter(|&p| {
                let settings = self.period(p);
                settings.lookback == 0 && !settings.incremental
            })
            .map(|p| {
                format!(
                    "periods.{p}.lookback is 0 and late_events.enabled is false: events written \
                     after their {p} window's last run are not counted until `vcmetrics recompute`; \
                     set a lookback (docs/configuration.md)",
                    p = p.as_str()
                )
            })
            .collect()
    }

    /// The connection string with its password replaced, for messages and logs.
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.mongodb_uri)
    }
}

/// Everything but the schedule, which is parsed (and may fail) in `validate`.
struct PeriodDefaults {
    chunk_windows: usize,
    lookback: usize,
    include_open: bool,
    max_windows_per_run: usize,
}

fn default_period(period: Period) -> PeriodDefaults {
    // One chunk covers a week of hours, a month of days, two months of weeks, one month; each
    // reads a bounded slice of the log, and recompute keeps `chunks_in_flight` of them going
    // (measured in the MongoDB benchmark: 24- to 168-hour chunks cost the same per event). A
    // backlog is worked off about two days (or the equivalent) per run. The long periods read
    // no closed window again: the late-event scan refreshes those that receive late writes,
    // whatever their age, where a lookback re-read last month whole every hour (10 million
    // events at the benchmark's scale) for the few late events it might hold.
    let (chunk_windows, lookback, max_windows_per_run) = match period {
        Period::Hourly => (168, 3, 48),
        Period::Daily => (31, 0, 14),
        Period::Weekly => (8, 0, 8),
        Period::Monthly => (1, 0, 3),
    };
    PeriodDefaults {
        chunk_windows,
        lookback,
        include_open: true,
        max_windows_per_run,
    }
}

/// Hourly and daily every few minutes, so today's numbers are fresh; weekly and monthly
/// hourly. Seconds and minutes are staggered so the periods do not all start at once.
fn default_schedule(period: Period) -> &'static str {
    match period {
        Period::Hourly => "5 * * * * *",
        Period::Daily => "30 */15 * * * *",
        Period::Weekly => "0 7 * * * *",
        Period::Monthly => "0 9 * * * *",
    }
}

impl Config {
    /// Every setting at its default: what an empty file and environment give.
    fn defaults() -> Config {
        Config {
            mongodb_uri: DEFAULT_MONGODB_URI.to_owned(),
            // Mongoose, like the driver, uses `test` when the URI names no database.
            database: "test".to_owned(),
            audit_collection: "videocallauditlogs".to_owned(),
            metrics_collection: "videocallmetrics".to_owned(),
            staging_collection: "videocallmetrics_staging".to_owned(),
            partials_collection: "videocallmetrics_partials".to_owned(),
            user_sets_collection: "videocallmetrics_users".to_owned(),
            sessions_collection: "sessions".to_owned(),
            calendar: Calendar::new(Tz::UTC, Weekday::Mon),
            audit_ttl: SCHEMA_AUDIT_TTL,
            audit_retention: None,
            periods: Period::ALL.map(|period| {
                let defaults = default_period(period);
                PeriodConfig {
                    chunk_windows: defaults.chunk_windows,
                    schedule: Schedule::parse(default_schedule(period))
                        .expect("the default schedules are valid 6-field cron expressions"),
                    lookback: defaults.lookback,
                    include_open: defaults.include_open,
                    max_windows_per_run: defaults.max_windows_per_run,
                    incremental: period == Period::Hourly,
                }
            }),
            state_collection: "vcmetricsstate".to_owned(),
            start_from: None,
            lease_ttl: Duration::from_secs(30),
            instance_id: default_instance_id(),
            shutdown_grace: Duration::from_secs(30),
            listen: DEFAULT_LISTEN,
            web_config_file: None,
            web: None,
            top_error_codes: 20,
            chunks_in_flight: 2,
            metrics_refresh: Duration::from_secs(30),
            // Explicit, so no engine's default applies (DocumentDB cancels a command after 120 s
            // unless told otherwise); long enough for a chunk at the scale docs/scaling.md measures on both
            // engines.
            aggregate_timeout: DEFAULT_AGGREGATE_TIMEOUT,
            late_events: LateEventsConfig::default(),
            stuck_call_after: Duration::from_secs(4 * 3600),
            session_rules_lookback: Duration::from_secs(7 * 86_400),
            archive: ArchiveConfig::default(),
        }
    }
}

/// `HOSTNAME` (a pod's name on Kubernetes) and the process id: unique among live replicas.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vcmetrics".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The connection string with any password replaced by `****`.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end..];
    // The user information ends at the last `@`, even in a string whose password holds an
    // unescaped `/`, `?` or `#` (the driver then misreads the password as a host): redacting
    // too much is harmless, too little is a leak.
    let Some(at) = rest.rfind('@') else {
        return uri.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:****{}", &uri[..scheme_end], &rest[at..]),
        None => uri.to_owned(),
    }
}

/// Whether the connection string carries a password (anything between the user name's `:` and
/// the last `@`).
fn has_password(uri: &str) -> bool {
    redact_uri(uri) != uri
}
