//! Configuration: a TOML file plus environment overrides, validated once into a typed [`Config`]
//! before anything runs.
//!
//! Precedence: environment variable, then file, then default. Unknown keys are rejected; every
//! problem names its key (or environment variable), and all of them are reported together. The
//! connection string's password never appears in an error or a log line (see [`redact_uri`]).

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use mongodb::options::ConnectionString;
use serde::Deserialize;

use crate::schedule::Schedule;
use crate::window::{Calendar, Period};

/// The audit log's TTL the platform's schema declares: 180 days.
pub const SCHEMA_AUDIT_TTL: Duration = Duration::from_secs(15_552_000);
/// `aggregate_timeout`'s default.
pub const DEFAULT_AGGREGATE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MONGODB_URI: &str = "mongodb://localhost:27017";
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9465);

/// The configuration as written in the file: every key optional, no key unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub mongodb_uri: Option<String>,
    pub database: Option<String>,
    pub audit_collection: Option<String>,
    pub metrics_collection: Option<String>,
    pub staging_collection: Option<String>,
    pub timezone: Option<String>,
    pub week_start: Option<String>,
    pub audit_ttl: Option<String>,
    pub audit_retention: Option<String>,
    pub state_collection: Option<String>,
    pub start_from: Option<String>,
    pub lease_ttl: Option<String>,
    pub instance_id: Option<String>,
    pub shutdown_grace: Option<String>,
    pub listen: Option<String>,
    pub top_error_codes: Option<i64>,
    pub chunks_in_flight: Option<i64>,
    pub metrics_refresh: Option<String>,
    pub aggregate_timeout: Option<String>,
    #[serde(default)]
    pub periods: RawPeriods,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriods {
    pub hourly: Option<RawPeriod>,
    pub daily: Option<RawPeriod>,
    pub weekly: Option<RawPeriod>,
    pub monthly: Option<RawPeriod>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriod {
    pub chunk_windows: Option<i64>,
    pub schedule: Option<String>,
    pub lookback: Option<i64>,
    pub include_open: Option<bool>,
    pub max_windows_per_run: Option<i64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mongodb_uri: String,
    pub database: String,
    pub audit_collection: String,
    pub metrics_collection: String,
    /// Where the two scans of a rollup chunk leave their per-window documents for a moment.
    pub staging_collection: String,
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
    /// Error codes exported per window before the rest are summed under `other`.
    pub top_error_codes: usize,
    /// How many chunks of one run are rolled up at once (each runs two aggregates).
    pub chunks_in_flight: usize,
    /// How often the exported call metrics are re-read besides after each run.
    pub metrics_refresh: Duration,
    /// The server-side time limit (`maxTimeMS`) of every aggregate vcmetrics sends.
    pub aggregate_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodConfig {
    /// At most this many windows go into one aggregate command (recompute, verify).
    pub chunk_windows: usize,
    /// When the daemon refreshes this period (6-field cron: sec min hour dom month dow), in the
    /// configured time zone.
    pub schedule: Schedule,
    /// How many closed windows every run refreshes again, for late events.
    pub lookback: usize,
    /// Whether runs also refresh the window that is still open.
    pub include_open: bool,
    /// At most this many closed windows in one run (one aggregate; the open window comes on top
    /// once there is no backlog); a backlog takes several runs.
    pub max_windows_per_run: usize,
}

impl Config {
    pub fn period(&self, period: Period) -> &PeriodConfig {
        &self.periods[period.index()]
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
    // One aggregate covers a week of hours, a month of days, two months of weeks, one month:
    // an event finds its window by a table lookup whatever the chunk's length, so longer chunks
    // only save the per-command overhead (measured in the MongoDB benchmark), and each still
    // reads a bounded slice of the log. A backlog is worked off about two days (or the
    // equivalent) per run.
    let (chunk_windows, lookback, max_windows_per_run) = match period {
        Period::Hourly => (168, 3, 48),
        Period::Daily => (31, 2, 14),
        Period::Weekly => (8, 1, 8),
        Period::Monthly => (1, 1, 3),
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
        Period::Hourly => "0 */5 * * * *",
        Period::Daily => "30 */15 * * * *",
        Period::Weekly => "0 7 * * * *",
        Period::Monthly => "0 9 * * * *",
    }
}

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key (`periods.hourly.chunk_windows`), or the environment variable it came from.
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration: {}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// A source of environment variables, so tests need not touch the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Reads the file (if any), applies the environment, validates.
pub fn load(path: Option<&Path>, env: &impl Env) -> Result<Config, ConfigError> {
    let raw = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.message().to_owned() + &key_hint(&e),
            })?
        }
        None => RawConfig::default(),
    };
    validate(raw, env)
}

fn key_hint(e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default()
}

/// A value and where it came from, so a problem names the right place.
struct Sourced {
    value: String,
    key: String,
}

fn pick(env: &impl Env, env_names: &[&str], key: &str, file: Option<String>) -> Option<Sourced> {
    env_names
        .iter()
        .find_map(|name| {
            env.var(name).map(|value| Sourced {
                value,
                key: format!("{key} (from ${name})"),
            })
        })
        .or_else(|| {
            file.map(|value| Sourced {
                value,
                key: key.to_owned(),
            })
        })
}

pub fn validate(raw: RawConfig, env: &impl Env) -> Result<Config, ConfigError> {
    let problems = RefCell::new(Vec::new());
    let problem = |key: &str, message: String| {
        problems.borrow_mut().push(Problem {
            key: key.to_owned(),
            message,
        })
    };

    let uri = pick(
        env,
        &["VCMETRICS_MONGODB_URI", "MONGODB_URI"],
        "mongodb_uri",
        raw.mongodb_uri,
    )
    .unwrap_or(Sourced {
        value: DEFAULT_MONGODB_URI.to_owned(),
        key: "mongodb_uri".to_owned(),
    });
    let uri_database = match ConnectionString::parse(&uri.value) {
        Ok(cs) => cs.default_database,
        Err(e) => {
            // The driver's message can quote any part of the string, the password included (or
            // a piece of it, where an unescaped character cut it), so with a password it is not
            // shown at all.
            let message = if has_password(&uri.value) {
                format!(
                    "{} is not a valid MongoDB connection string (the driver's detail is not \
                     shown, as it can quote the password; percent-encode : / ? # [ ] @ % in the \
                     user name and password)",
                    redact_uri(&uri.value)
                )
            } else {
                format!("not a valid MongoDB connection string: {e}")
            };
            problem(&uri.key, message);
            None
        }
    };

    let database = match pick(env, &["VCMETRICS_DATABASE"], "database", raw.database) {
        Some(s) => match check_database_name(&s.value) {
            Ok(()) => s.value,
            Err(m) => {
                problem(&s.key, m);
                String::new()
            }
        },
        // Mongoose, like the driver, uses `test` when the URI names no database.
        None => uri_database.unwrap_or_else(|| "test".to_owned()),
    };

    let collection = |env_name: &str, key: &str, file: Option<String>, default: &str| match pick(
        env,
        &[env_name],
        key,
        file,
    ) {
        Some(s) => match check_collection_name(&s.value) {
            Ok(()) => s.value,
            Err(m) => {
                problem(&s.key, m);
                String::new()
            }
        },
        None => default.to_owned(),
    };
    let audit_collection = collection(
        "VCMETRICS_AUDIT_COLLECTION",
        "audit_collection",
        raw.audit_collection,
        "videocallauditlogs",
    );
    let metrics_collection = collection(
        "VCMETRICS_METRICS_COLLECTION",
        "metrics_collection",
        raw.metrics_collection,
        "videocallmetrics",
    );
    let staging_collection = collection(
        "VCMETRICS_STAGING_COLLECTION",
        "staging_collection",
        raw.staging_collection,
        "videocallmetrics_staging",
    );
    let state_collection = collection(
        "VCMETRICS_STATE_COLLECTION",
        "state_collection",
        raw.state_collection,
        "vcmetricsstate",
    );
    // Each collection holds one kind of document: a rollup deletes its staged documents, a
    // `$merge` into the audit log would write metrics among the events.
    let names = [
        ("audit_collection", &audit_collection),
        ("metrics_collection", &metrics_collection),
        ("staging_collection", &staging_collection),
        ("state_collection", &state_collection),
    ];
    for (i, (key, name)) in names.iter().enumerate() {
        if let Some((other, _)) = names[..i]
            .iter()
            .find(|(_, n)| !name.is_empty() && n == name)
        {
            problem(
                key,
                format!("names the same collection as {other} ({name})"),
            );
        }
    }

    let tz = match pick(env, &["VCMETRICS_TIMEZONE"], "timezone", raw.timezone) {
        Some(s) => s.value.parse::<Tz>().unwrap_or_else(|_| {
            problem(
                &s.key,
                format!(
                    "unknown time zone {:?} (expected an IANA name such as Europe/Berlin)",
                    s.value
                ),
            );
            Tz::UTC
        }),
        None => Tz::UTC,
    };
    let week_start = match pick(env, &["VCMETRICS_WEEK_START"], "week_start", raw.week_start) {
        Some(s) => s.value.parse::<Weekday>().unwrap_or_else(|_| {
            problem(
                &s.key,
                format!(
                    "{:?} is not a day of the week (expected monday ... sunday)",
                    s.value
                ),
            );
            Weekday::Mon
        }),
        None => Weekday::Mon,
    };

    // Every duration has a ceiling: time arithmetic stays far from chrono's limits, and a TTL
    // stays below what MongoDB accepts for expireAfterSeconds (2^31 - 1 s, about 68 years).
    let duration = |env_name: &str,
                    key: &str,
                    file: Option<String>,
                    range: (Duration, Duration)| {
        let (min, max) = range;
        pick(env, &[env_name], key, file).and_then(|s| match humantime::parse_duration(&s.value) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                problem(
                    &s.key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
            Err(e) => {
                problem(
                    &s.key,
                    format!(
                        "{:?} is not a duration ({e}; e.g. \"180d\", \"12h\")",
                        s.value
                    ),
                );
                None
            }
        })
    };
    let second = Duration::from_secs(1);
    let hour = Duration::from_secs(3600);
    let retention_range = (second, Duration::from_secs(2_147_483_647));
    let audit_ttl = duration(
        "VCMETRICS_AUDIT_TTL",
        "audit_ttl",
        raw.audit_ttl,
        retention_range,
    )
    .unwrap_or(SCHEMA_AUDIT_TTL);
    let audit_retention = duration(
        "VCMETRICS_AUDIT_RETENTION",
        "audit_retention",
        raw.audit_retention,
        retention_range,
    );
    let lease_ttl = duration(
        "VCMETRICS_LEASE_TTL",
        "lease_ttl",
        raw.lease_ttl,
        (Duration::from_secs(3), hour),
    )
    .unwrap_or(Duration::from_secs(30));
    let shutdown_grace = duration(
        "VCMETRICS_SHUTDOWN_GRACE",
        "shutdown_grace",
        raw.shutdown_grace,
        (Duration::ZERO, hour),
    )
    .unwrap_or(Duration::from_secs(30));
    let start_from =
        pick(env, &["VCMETRICS_START_FROM"], "start_from", raw.start_from).and_then(|s| {
            DateTime::parse_from_rfc3339(&s.value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    problem(
                        &s.key,
                        format!("{:?} is not an RFC 3339 instant ({e})", s.value),
                    )
                })
                .ok()
        });
    let listen = match pick(env, &["VCMETRICS_LISTEN"], "listen", raw.listen) {
        Some(s) => s.value.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                &s.key,
                format!(
                    "{:?} is not an address:port (e.g. \"0.0.0.0:9465\")",
                    s.value
                ),
            );
            DEFAULT_LISTEN
        }),
        None => DEFAULT_LISTEN,
    };
    let mut top_error_codes = 20;
    if let Some(n) = raw.top_error_codes {
        match usize::try_from(n) {
            Ok(n) if (1..=500).contains(&n) => top_error_codes = n,
            _ => problem(
                "top_error_codes",
                format!("must be between 1 and 500, got {n}"),
            ),
        }
    }
    let mut chunks_in_flight = 2;
    if let Some(n) = raw.chunks_in_flight {
        match usize::try_from(n) {
            Ok(n) if (1..=8).contains(&n) => chunks_in_flight = n,
            _ => problem(
                "chunks_in_flight",
                format!("must be between 1 and 8, got {n}"),
            ),
        }
    }
    let metrics_refresh = duration(
        "VCMETRICS_METRICS_REFRESH",
        "metrics_refresh",
        raw.metrics_refresh,
        (second, hour),
    )
    .unwrap_or(Duration::from_secs(30));
    // Explicit, so no engine's default applies (DocumentDB cancels a command after 120 s unless
    // told otherwise); long enough for a chunk at the README's scale on both engines.
    let aggregate_timeout = duration(
        "VCMETRICS_AGGREGATE_TIMEOUT",
        "aggregate_timeout",
        raw.aggregate_timeout,
        (second, Duration::from_secs(24 * 3600)),
    )
    .unwrap_or(DEFAULT_AGGREGATE_TIMEOUT);
    let instance_id = pick(
        env,
        &["VCMETRICS_INSTANCE_ID"],
        "instance_id",
        raw.instance_id,
    )
    .map(|s| s.value)
    .unwrap_or_else(default_instance_id);

    let RawPeriods {
        hourly,
        daily,
        weekly,
        monthly,
    } = raw.periods;
    let raw_periods = [hourly, daily, weekly, monthly];
    let mut periods = Vec::with_capacity(4);
    for (period, raw_period) in Period::ALL.into_iter().zip(raw_periods) {
        let raw_period = raw_period.unwrap_or_default();
        let mut config = default_period(period);
        let count = |name: &str,
                     value: Option<i64>,
                     range: std::ops::RangeInclusive<usize>,
                     slot: &mut usize| {
            if let Some(n) = value {
                match usize::try_from(n) {
                    Ok(n) if range.contains(&n) => *slot = n,
                    _ => problem(
                        &format!("periods.{period}.{name}"),
                        format!(
                            "must be between {} and {}, got {n}",
                            range.start(),
                            range.end()
                        ),
                    ),
                }
            }
        };
        count(
            "chunk_windows",
            raw_period.chunk_windows,
            1..=1000,
            &mut config.chunk_windows,
        );
        count(
            "lookback",
            raw_period.lookback,
            0..=1000,
            &mut config.lookback,
        );
        count(
            "max_windows_per_run",
            raw_period.max_windows_per_run,
            1..=1000,
            &mut config.max_windows_per_run,
        );
        if let Some(open) = raw_period.include_open {
            config.include_open = open;
        }
        let schedule_text = raw_period
            .schedule
            .unwrap_or_else(|| default_schedule(period).to_owned());
        let schedule = Schedule::parse(&schedule_text)
            .map_err(|e| problem(&format!("periods.{period}.schedule"), e))
            .ok();
        if config.max_windows_per_run <= config.lookback + 1 {
            problem(
                &format!("periods.{period}.max_windows_per_run"),
                format!(
                    "must exceed lookback + 1 ({}), or a run could never get past its own lookback",
                    config.lookback + 1
                ),
            );
        }
        periods.extend(schedule.map(|schedule| PeriodConfig {
            chunk_windows: config.chunk_windows,
            schedule,
            lookback: config.lookback,
            include_open: config.include_open,
            max_windows_per_run: config.max_windows_per_run,
        }));
    }

    let problems = problems.into_inner();
    let periods: [PeriodConfig; 4] = match periods.try_into() {
        Ok(p) if problems.is_empty() => p,
        _ => return Err(ConfigError::Invalid(problems)),
    };
    Ok(Config {
        mongodb_uri: uri.value,
        database,
        audit_collection,
        metrics_collection,
        staging_collection,
        calendar: Calendar::new(tz, week_start),
        audit_ttl,
        audit_retention,
        periods,
        state_collection,
        start_from,
        lease_ttl,
        instance_id,
        shutdown_grace,
        listen,
        top_error_codes,
        chunks_in_flight,
        metrics_refresh,
        aggregate_timeout,
    })
}

/// `HOSTNAME` (a pod's name on Kubernetes) and the process id: unique among live replicas.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vcmetrics".to_owned());
    format!("{host}-{}", std::process::id())
}

fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".to_owned());
    }
    match name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        Some(c) => Err(format!(
            "{name:?} contains {c:?}, which MongoDB does not allow in a database name"
        )),
        None => Ok(()),
    }
}

fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.contains('$') || name.contains('\0') {
        return Err(format!("{name:?} contains '$' or a NUL character"));
    }
    if name.starts_with("system.") {
        return Err(format!("{name:?} is in the reserved system. namespace"));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str, env: &impl Env) -> Result<Config, ConfigError> {
        validate(toml::from_str(text).unwrap(), env)
    }

    #[test]
    fn defaults_work_against_localhost() {
        let c = from_toml("", &[]).unwrap();
        assert_eq!(c.mongodb_uri, "mongodb://localhost:27017");
        assert_eq!(c.database, "test");
        assert_eq!(c.audit_collection, "videocallauditlogs");
        assert_eq!(c.metrics_collection, "videocallmetrics");
        assert_eq!(c.staging_collection, "videocallmetrics_staging");
        assert_eq!(c.calendar, Calendar::default());
        assert_eq!(c.audit_ttl, Duration::from_secs(15_552_000));
        assert_eq!(c.audit_retention, None);
        assert_eq!(c.period(Period::Hourly).chunk_windows, 168);
        assert_eq!(
            c.period(Period::Hourly).schedule.to_string(),
            "0 */5 * * * *"
        );
        assert_eq!(c.period(Period::Daily).lookback, 2);
        assert!(c.period(Period::Monthly).include_open);
        assert_eq!(c.state_collection, "vcmetricsstate");
        assert_eq!(c.lease_ttl, Duration::from_secs(30));
    }

    #[test]
    fn environment_overrides_the_file_and_the_uri_names_the_database() {
        let c = from_toml(
            "timezone = \"UTC\"\nmongodb_uri = \"mongodb://file:27017\"",
            &[
                (
                    "MONGODB_URI",
                    "mongodb://u:pw@db.example:27017/platform?authSource=admin",
                ),
                ("VCMETRICS_TIMEZONE", "Europe/Berlin"),
                ("VCMETRICS_WEEK_START", "sunday"),
            ],
        )
        .unwrap();
        assert_eq!(c.database, "platform");
        assert_eq!(c.calendar.time_zone(), chrono_tz::Europe::Berlin);
        assert_eq!(c.calendar.week_start(), Weekday::Sun);
        assert_eq!(
            c.redacted_uri(),
            "mongodb://u:****@db.example:27017/platform?authSource=admin"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = from_toml(
            "timezone = \"Europe/Berln\"\nweek_start = \"someday\"\naudit_retention = \"soon\"\n\
             [periods.hourly]\nchunk_windows = 0\nschedule = \"every five minutes\"",
            &[("VCMETRICS_METRICS_COLLECTION", "bad$name")],
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "metrics_collection (from $VCMETRICS_METRICS_COLLECTION)",
                "timezone",
                "week_start",
                "audit_retention",
                "periods.hourly.chunk_windows",
                "periods.hourly.schedule"
            ]
        );
        assert!(err
            .to_string()
            .contains("unknown time zone \"Europe/Berln\""));
    }

    #[test]
    fn durations_are_bounded() {
        let err = from_toml(
            "audit_ttl = \"100years\"\nlease_ttl = \"1s\"\nshutdown_grace = \"2h\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("audit_ttl: must be between 1s and 68years"),
            "{err}"
        );
        assert!(
            err.contains("lease_ttl: must be between 3s and 1h"),
            "{err}"
        );
        assert!(
            err.contains("shutdown_grace: must be between 0s and 1h"),
            "{err}"
        );
        let err = from_toml("aggregate_timeout = \"0s\"", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("aggregate_timeout: must be between 1s and 1day"),
            "{err}"
        );
        let c = from_toml("", &[("VCMETRICS_AGGREGATE_TIMEOUT", "90s")]).unwrap();
        assert_eq!(c.aggregate_timeout, Duration::from_secs(90));
        assert_eq!(
            from_toml("", &[]).unwrap().aggregate_timeout,
            DEFAULT_AGGREGATE_TIMEOUT
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RawConfig>("timezon = \"UTC\"").unwrap_err();
        assert!(err.message().contains("unknown field `timezon`"), "{err}");
        let err = toml::from_str::<RawConfig>("[periods.yearly]\nchunk_windows = 1").unwrap_err();
        assert!(err.message().contains("unknown field `yearly`"), "{err}");
    }

    #[test]
    fn a_bad_uri_is_reported_without_its_password() {
        let err = from_toml("", &[("MONGODB_URI", "mongodb://u:s3cret@/")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mongodb_uri (from $MONGODB_URI)"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(
            redact_uri("mongodb://localhost:27017"),
            "mongodb://localhost:27017"
        );
        // Unescaped `?`, `/` or `@` in a password: everything up to the last `@` goes.
        assert_eq!(
            redact_uri("mongodb://vcuser:LongSecret123?@127.0.0.1:27017/platform"),
            "mongodb://vcuser:****@127.0.0.1:27017/platform"
        );
        assert_eq!(
            redact_uri("mongodb://u:a/b@c@db:27017/x?w=1"),
            "mongodb://u:****@db:27017/x?w=1"
        );
        assert_eq!(
            redact_uri("mongodb+srv://app:p%40ss@cluster0.example.net/db"),
            "mongodb+srv://app:****@cluster0.example.net/db"
        );
        assert_eq!(redact_uri("mongodb://user@h/"), "mongodb://user@h/");
    }
}
