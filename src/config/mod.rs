//! Configuration: a TOML file plus environment overrides, validated once into a typed [`Config`]
//! before anything runs.
//!
//! Precedence: environment variable, then file, then default. Unknown keys are rejected; every
//! problem names its key (or environment variable), and all of them are reported together. The
//! connection string's password never appears in an error or a log line (see [`redact_uri`]).

pub mod effective;
mod sources;
mod values;
pub mod web;

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use mongodb::options::ConnectionString;

use crate::window::{Calendar, Period, Schedule};
use sources::Sources;
pub use sources::{Origin, Origins};
use values::{
    AggregateTimeoutBounds, Bounded, CollectionName, Count, DatabaseName, GraceBounds, LeaseBounds,
    ListenAddress, RefreshBounds, RetentionBounds, RulesLookbackBounds, SettleBounds, StuckBounds,
    TimeZoneName, WeekStart,
};
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
    /// Where the two scans of a rollup chunk leave their per-window documents for a moment.
    pub staging_collection: String,
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
    // One chunk covers a week of hours, a month of days, two months of weeks, one month; each
    // reads a bounded slice of the log, and recompute keeps `chunks_in_flight` of them going
    // (measured in the MongoDB benchmark: 24- to 168-hour chunks cost the same per event). A
    // backlog is worked off about two days (or the equivalent) per run.
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
    #[error("cannot read config file {path}")]
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
    load_traced(path, env).map(|(config, _)| config)
}

/// [`load`], with where each key's value came from.
pub fn load_traced(path: Option<&Path>, env: &impl Env) -> Result<(Config, Origins), ConfigError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.map(Path::to_owned).unwrap_or_default(),
            message: e.message().to_owned() + &location(&text, &e),
        })?;
    validate_traced(table, env)
}

/// The configuration from TOML text (no file) and the environment.
pub fn from_toml(text: &str, env: &impl Env) -> Result<Config, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: PathBuf::from("(inline)"),
            message: e.message().to_owned() + &location(text, &e),
        })?;
    validate(table, env)
}

/// Where in the text a syntax error is, as an editor counts: line and column, from 1.
fn location(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
    format!(" (line {line}, column {column})")
}

/// The keys of the file's top level (`periods`, `late_events` and `archive` are tables).
pub const TOP_LEVEL_KEYS: [&str; 26] = [
    "mongodb_uri",
    "database",
    "audit_collection",
    "metrics_collection",
    "staging_collection",
    "state_collection",
    "sessions_collection",
    "timezone",
    "week_start",
    "audit_ttl",
    "audit_retention",
    "start_from",
    "lease_ttl",
    "instance_id",
    "shutdown_grace",
    "listen",
    "web_config_file",
    "top_error_codes",
    "chunks_in_flight",
    "metrics_refresh",
    "aggregate_timeout",
    "periods",
    "late_events",
    "stuck_call_after",
    "session_rules_lookback",
    "archive",
];
/// The keys of each `[periods.<period>]` table.
pub const PERIOD_KEYS: [&str; 5] = [
    "chunk_windows",
    "schedule",
    "lookback",
    "include_open",
    "max_windows_per_run",
];
/// The keys of `[late_events]`.
pub const LATE_EVENTS_KEYS: [&str; 3] = ["enabled", "scan_limit", "settle"];
/// The keys of `[archive]`.
pub const ARCHIVE_KEYS: [&str; 6] = [
    "collection",
    "database",
    "after",
    "retention",
    "schedule",
    "batch_size",
];

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

/// Validates a parsed file (a TOML table) with the environment applied.
pub fn validate(table: toml::Table, env: &impl Env) -> Result<Config, ConfigError> {
    validate_traced(table, env).map(|(config, _)| config)
}

/// [`validate`], with where each key's value came from (`vcmetrics config`).
pub fn validate_traced(
    table: toml::Table,
    env: &impl Env,
) -> Result<(Config, Origins), ConfigError> {
    let problems = RefCell::new(Vec::new());
    let origins = RefCell::new(Origins::new());
    let mut file = Sources {
        table,
        prefix: String::new(),
        env,
        problems: &problems,
        origins: &origins,
    };
    let mut config = Config::defaults();
    read_connection(&mut file, &mut config);
    let names_in_use = read_collections(&mut file, &mut config);
    read_calendar_and_retention(&mut file, &mut config);
    read_service(&mut file, &mut config);
    read_periods(&mut file, &mut config);
    read_late_events(&mut file, &mut config);
    let mut archive = file.table("archive").unwrap_or_else(|| Sources {
        // The environment still applies without a table.
        table: toml::Table::new(),
        prefix: "archive.".to_owned(),
        env: file.env,
        problems: file.problems,
        origins: file.origins,
    });
    read_archive(&mut archive, &mut config, &names_in_use);
    archive.finish(&ARCHIVE_KEYS);
    file.finish(&TOP_LEVEL_KEYS);

    let problems = problems.into_inner();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok((config, origins.into_inner()))
}

/// `mongodb_uri` and `database` (by default the one the URI names).
fn read_connection<E: Env>(file: &mut Sources<'_, E>, config: &mut Config) {
    let uri = file
        .get_sourced::<String>("mongodb_uri", &["VCMETRICS_MONGODB_URI", "MONGODB_URI"])
        .unwrap_or_else(|| (DEFAULT_MONGODB_URI.to_owned(), "mongodb_uri".to_owned()));
    let uri_database = match ConnectionString::parse(&uri.0) {
        Ok(cs) => cs.default_database,
        Err(e) => {
            // The driver's message can quote any part of the string, the password included (or
            // a piece of it, where an unescaped character cut it), so with a password it is not
            // shown at all.
            let message = if has_password(&uri.0) {
                format!(
                    "{} is not a valid MongoDB connection string (the driver's detail is not \
                     shown, as it can quote the password; percent-encode : / ? # [ ] @ % in the \
                     user name and password)",
                    redact_uri(&uri.0)
                )
            } else {
                format!("not a valid MongoDB connection string: {}", e.kind)
            };
            file.problem(&uri.1, message);
            None
        }
    };
    config.mongodb_uri = uri.0;
    match file.get::<DatabaseName>("database", &["VCMETRICS_DATABASE"]) {
        Some(d) => config.database = d.0,
        None => {
            if let Some(d) = uri_database {
                config.database = d;
            }
        }
    }
}

/// The five collections, each holding one kind of document: a rollup deletes its staged
/// documents, a `$merge` into the audit log would write metrics among the events. Returns each
/// name with the key (or variable) it came from, for the archive's check.
fn read_collections<E: Env>(
    file: &mut Sources<'_, E>,
    config: &mut Config,
) -> Vec<(String, String)> {
    let mut collection = |key: &str, env_name: &str, value: &mut String| match file
        .get_sourced::<CollectionName>(key, &[env_name])
    {
        Some((c, source)) => {
            *value = c.0;
            (value.clone(), source)
        }
        None => (value.clone(), key.to_owned()),
    };
    let names = [
        collection(
            "audit_collection",
            "VCMETRICS_AUDIT_COLLECTION",
            &mut config.audit_collection,
        ),
        collection(
            "metrics_collection",
            "VCMETRICS_METRICS_COLLECTION",
            &mut config.metrics_collection,
        ),
        collection(
            "staging_collection",
            "VCMETRICS_STAGING_COLLECTION",
            &mut config.staging_collection,
        ),
        collection(
            "state_collection",
            "VCMETRICS_STATE_COLLECTION",
            &mut config.state_collection,
        ),
        collection(
            "sessions_collection",
            "VCMETRICS_SESSIONS_COLLECTION",
            &mut config.sessions_collection,
        ),
    ];
    for (i, (name, source)) in names.iter().enumerate() {
        if let Some((_, other)) = names[..i].iter().find(|(n, _)| n == name) {
            file.problem(
                source,
                format!("names the same collection as {other} ({name})"),
            );
        }
    }
    names.to_vec()
}

/// The time zone and week start that cut windows, and the audit log's TTL and retention.
fn read_calendar_and_retention<E: Env>(file: &mut Sources<'_, E>, config: &mut Config) {
    let tz = file
        .get::<TimeZoneName>("timezone", &["VCMETRICS_TIMEZONE"])
        .map_or(Tz::UTC, |t| t.0);
    let week_start = file
        .get::<WeekStart>("week_start", &["VCMETRICS_WEEK_START"])
        .map_or(Weekday::Mon, |w| w.0);
    config.calendar = Calendar::new(tz, week_start);
    if let Some(d) = file.get::<Bounded<RetentionBounds>>("audit_ttl", &["VCMETRICS_AUDIT_TTL"]) {
        config.audit_ttl = d.0;
    }
    config.audit_retention = file
        .get::<Bounded<RetentionBounds>>("audit_retention", &["VCMETRICS_AUDIT_RETENTION"])
        .map(|d| d.0);
}

/// The daemon's own settings: lease, shutdown, endpoint, rollup limits, gauges.
fn read_service<E: Env>(file: &mut Sources<'_, E>, config: &mut Config) {
    fn duration<E: Env, B: values::DurationBounds>(
        file: &mut Sources<'_, E>,
        key: &str,
        env_names: &[&str],
        value: &mut Duration,
    ) {
        if let Some(d) = file.get::<Bounded<B>>(key, env_names) {
            *value = d.0;
        }
    }
    duration::<_, LeaseBounds>(
        file,
        "lease_ttl",
        &["VCMETRICS_LEASE_TTL"],
        &mut config.lease_ttl,
    );
    duration::<_, GraceBounds>(
        file,
        "shutdown_grace",
        &["VCMETRICS_SHUTDOWN_GRACE"],
        &mut config.shutdown_grace,
    );
    config.start_from = file
        .get::<values::Instant>("start_from", &["VCMETRICS_START_FROM"])
        .map(|t| t.0);
    if let Some(a) = file.get::<ListenAddress>("listen", &["VCMETRICS_LISTEN"]) {
        config.listen = a.0;
    }
    if let Some((path, source)) =
        file.get_sourced::<PathBuf>("web_config_file", &["VCMETRICS_WEB_CONFIG_FILE"])
    {
        match WebConfig::read(&path) {
            Ok(web) => config.web = Some(web),
            Err(e) => file.problem(&source, e.to_string()),
        }
        config.web_config_file = Some(path);
    }
    if let Some(n) = file.get::<Count<1, 500>>("top_error_codes", &[]) {
        config.top_error_codes = n.0;
    }
    if let Some(n) = file.get::<Count<1, 8>>("chunks_in_flight", &[]) {
        config.chunks_in_flight = n.0;
    }
    duration::<_, RefreshBounds>(
        file,
        "metrics_refresh",
        &["VCMETRICS_METRICS_REFRESH"],
        &mut config.metrics_refresh,
    );
    duration::<_, AggregateTimeoutBounds>(
        file,
        "aggregate_timeout",
        &["VCMETRICS_AGGREGATE_TIMEOUT"],
        &mut config.aggregate_timeout,
    );
    duration::<_, StuckBounds>(
        file,
        "stuck_call_after",
        &["VCMETRICS_STUCK_CALL_AFTER"],
        &mut config.stuck_call_after,
    );
    duration::<_, RulesLookbackBounds>(
        file,
        "session_rules_lookback",
        &[],
        &mut config.session_rules_lookback,
    );
    if let Some(id) = file.get::<String>("instance_id", &["VCMETRICS_INSTANCE_ID"]) {
        config.instance_id = id;
    }
}

/// `[periods.<period>]`: each period's schedule, chunking and lookback.
fn read_periods<E: Env>(file: &mut Sources<'_, E>, config: &mut Config) {
    let mut periods_table = file.table("periods");
    for period in Period::ALL {
        let Some(mut settings) = periods_table
            .as_mut()
            .and_then(|t| t.table(period.as_str()))
        else {
            continue;
        };
        let target = &mut config.periods[period.index()];
        let key = |name: &str| format!("periods.{period}.{name}");
        let count = |settings: &mut Sources<'_, E>, name: &str, value: &mut usize| {
            if let Some(n) = settings.get::<Count<0, 1000>>(name, &[]) {
                *value = n.0;
            }
        };
        let chunk_windows = target.chunk_windows;
        count(&mut settings, "chunk_windows", &mut target.chunk_windows);
        if target.chunk_windows == 0 {
            settings.problem(&key("chunk_windows"), "must be between 1 and 1000, got 0");
            target.chunk_windows = chunk_windows;
        }
        count(&mut settings, "lookback", &mut target.lookback);
        count(
            &mut settings,
            "max_windows_per_run",
            &mut target.max_windows_per_run,
        );
        if let Some(include_open) = settings.get::<bool>("include_open", &[]) {
            target.include_open = include_open;
        }
        if let Some(schedule) = settings.get::<Schedule>("schedule", &[]) {
            target.schedule = schedule;
        }
        settings.finish(&PERIOD_KEYS);
    }
    for period in Period::ALL {
        let target = &config.periods[period.index()];
        if target.max_windows_per_run <= target.lookback + 1 {
            file.problem(
                &format!("periods.{period}.max_windows_per_run"),
                format!(
                    "must exceed lookback + 1 ({}), or a run could never get past its own lookback",
                    target.lookback + 1
                ),
            );
        }
    }
    if let Some(periods_table) = periods_table {
        periods_table.finish(&Period::ALL.map(Period::as_str));
    }
}

/// `[late_events]`.
fn read_late_events<E: Env>(file: &mut Sources<'_, E>, config: &mut Config) {
    let Some(mut late) = file.table("late_events") else {
        return;
    };
    let target = &mut config.late_events;
    if let Some(enabled) = late.get::<bool>("enabled", &[]) {
        target.enabled = enabled;
    }
    if let Some(limit) = late.get::<Count<1, 10_000_000>>("scan_limit", &[]) {
        target.scan_limit = limit.0;
    }
    if let Some(settle) = late.get::<Bounded<SettleBounds>>("settle", &[]) {
        target.settle = settle.0;
    }
    late.finish(&LATE_EVENTS_KEYS);
}

/// `[archive]`, checked against the collections in use: an archive in the configured database
/// must not be one of them.
fn read_archive<E: Env>(
    table: &mut Sources<'_, E>,
    config: &mut Config,
    names_in_use: &[(String, String)],
) {
    let database = config.database.clone();
    let archive = &mut config.archive;
    let collection =
        table.get_sourced::<CollectionName>("collection", &["VCMETRICS_ARCHIVE_COLLECTION"]);
    let archive_database = table
        .get::<DatabaseName>("database", &["VCMETRICS_ARCHIVE_DATABASE"])
        .map(|d| d.0)
        .filter(|d| *d != database);
    if let Some((name, source)) = collection {
        archive.collection = name.0;
        if archive_database.is_none() {
            if let Some((_, other)) = names_in_use.iter().find(|(n, _)| *n == archive.collection) {
                table.problem(
                    &source,
                    format!(
                        "names the same collection as {other} ({})",
                        archive.collection
                    ),
                );
            }
        }
    }
    archive.database = archive_database;
    archive.after = table
        .get::<Bounded<RetentionBounds>>("after", &["VCMETRICS_ARCHIVE_AFTER"])
        .map(|d| d.0);
    archive.retention = table
        .get::<Bounded<RetentionBounds>>("retention", &["VCMETRICS_ARCHIVE_RETENTION"])
        .map(|d| d.0);
    archive.schedule = table.get::<Schedule>("schedule", &["VCMETRICS_ARCHIVE_SCHEDULE"]);
    if let Some(n) = table.get::<Count<1, 100_000>>("batch_size", &["VCMETRICS_ARCHIVE_BATCH_SIZE"])
    {
        archive.batch_size = n.0;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_against_localhost() {
        let c = from_toml("", &[]).unwrap();
        assert_eq!(c.mongodb_uri, "mongodb://localhost:27017");
        assert_eq!(c.database, "test");
        assert_eq!(c.audit_collection, "videocallauditlogs");
        assert_eq!(c.metrics_collection, "videocallmetrics");
        assert_eq!(c.staging_collection, "videocallmetrics_staging");
        assert_eq!(c.sessions_collection, "sessions");
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
    fn a_bad_web_config_file_is_a_problem_of_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web.yml");
        std::fs::write(&web, "basic_auth_users:\n  prometheus: plain-password\n").unwrap();
        let path = web.display().to_string();
        let err = from_toml("", &[("VCMETRICS_WEB_CONFIG_FILE", path.as_str())]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("web_config_file (from $VCMETRICS_WEB_CONFIG_FILE)")
                && text.contains("basic_auth_users.prometheus: not a bcrypt hash")
                && !text.contains("plain-password"),
            "{text}"
        );
        let err = from_toml("web_config_file = \"/nonexistent/web.yml\"", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("web_config_file: /nonexistent/web.yml: cannot read"),
            "{err}"
        );
        std::fs::write(&web, "").unwrap();
        let c = from_toml(&format!("web_config_file = {path:?}"), &[]).unwrap();
        assert_eq!(c.web, Some(WebConfig::default()));
    }

    #[test]
    fn the_archive_is_off_by_default_and_its_keys_are_checked() {
        let c = from_toml("", &[]).unwrap();
        assert_eq!(c.archive, ArchiveConfig::default());
        assert_eq!(c.archive.collection, "videocallauditlogs_archive");
        assert!(c.archive.schedule.is_none() && c.archive.after.is_none());
        let c = from_toml(
            "database = \"app\"\n[archive]\ncollection = \"old_events\"\ndatabase = \"cold\"\n\
             after = \"150d\"\nretention = \"5y\"\nschedule = \"0 30 3 * * *\"\nbatch_size = 500",
            &[("VCMETRICS_ARCHIVE_BATCH_SIZE", "2000")],
        )
        .unwrap();
        assert_eq!(c.archive.collection, "old_events");
        assert_eq!(c.archive.database.as_deref(), Some("cold"));
        assert_eq!(c.archive.after, Some(Duration::from_secs(150 * 86_400)));
        assert!(c.archive.retention.is_some());
        assert_eq!(c.archive.schedule.unwrap().to_string(), "0 30 3 * * *");
        assert_eq!(c.archive.batch_size, 2000);
        // The configured database named again is the same database.
        let c = from_toml("database = \"app\"\n[archive]\ndatabase = \"app\"", &[]).unwrap();
        assert_eq!(c.archive.database, None);
        let err = from_toml(
            "[archive]\ncollection = \"videocallmetrics\"\nbatch_size = 0\nschedule = \"soon\"\nttl = \"1d\"",
            &[("VCMETRICS_ARCHIVE_AFTER", "forever")],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "archive.collection: names the same collection as metrics_collection",
            "archive.batch_size: must be between 1 and 100000, got 0",
            "archive.schedule",
            "archive.after (from $VCMETRICS_ARCHIVE_AFTER)",
            "archive.ttl: unknown key",
        ] {
            assert!(err.contains(key), "{key} missing in: {err}");
        }
        // In another database the name is free.
        from_toml(
            "[archive]\ncollection = \"videocallmetrics\"\ndatabase = \"cold\"",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn late_events_are_on_by_default_and_their_keys_are_checked() {
        let c = from_toml("", &[]).unwrap();
        assert_eq!(c.late_events, LateEventsConfig::default());
        assert!(c.late_events.enabled);
        let c = from_toml(
            "[late_events]\nenabled = false\nscan_limit = 500\nsettle = \"5s\"",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.late_events,
            LateEventsConfig {
                enabled: false,
                scan_limit: 500,
                settle: Duration::from_secs(5)
            }
        );
        let err = from_toml(
            "[late_events]\nscan_limit = 0\nsettle = \"2h\"\nlimit = 3",
            &[],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "late_events.scan_limit",
            "late_events.settle",
            "late_events.limit: unknown key",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
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
    fn unknown_keys_are_rejected_with_the_rest() {
        let err = from_toml(
            "timezon = \"UTC\"\nlease_ttl = \"1s\"\n[periods.yearly]\nchunk_windows = 1\n\
             [periods.daily]\nchunkwindows = 3",
            &[],
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lease_ttl",
                "periods.daily.chunkwindows",
                "periods.yearly",
                "timezon"
            ]
        );
        assert!(err
            .to_string()
            .contains("timezon: unknown key (expected one of: mongodb_uri"));
        assert!(err.to_string().contains(
            "periods.yearly: unknown key (expected one of: hourly, daily, weekly, monthly)"
        ));
    }

    #[test]
    fn a_syntax_error_is_located_by_line_and_column() {
        let err = from_toml("timezone = \"UTC\"\nlease_ttl = = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("(line 2, column 13)"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = from_toml("top_error_codes = \"many\"\nperiods = 3", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("top_error_codes: expected a whole number, got \"many\""),
            "{err}"
        );
        assert!(
            err.contains("periods: expected a table, found integer"),
            "{err}"
        );
    }

    #[test]
    fn two_keys_naming_one_collection_are_a_problem() {
        let err = from_toml("staging_collection = \"videocallmetrics\"", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("staging_collection: names the same collection as metrics_collection"),
            "{err}"
        );
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
