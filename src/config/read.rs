//! Reading a configuration: the file's parts onto the defaults, the environment over the file,
//! every problem collected with its key.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Weekday;
use chrono_tz::Tz;
use mongodb::options::ConnectionString;

use super::keys::{ARCHIVE_KEYS, LATE_EVENTS_KEYS, PERIOD_KEYS, TOP_LEVEL_KEYS};
use super::problem::ConfigError;
use super::sources::{Origins, Sources};
use super::values::{
    self, AggregateTimeoutBounds, Bounded, CollectionName, Count, DatabaseName, GraceBounds,
    LeaseBounds, ListenAddress, RefreshBounds, RetentionBounds, RulesLookbackBounds, SettleBounds,
    StuckBounds, TimeZoneName, WeekStart,
};
use super::web::WebConfig;
use super::{has_password, redact_uri, Config, DEFAULT_MONGODB_URI};
use crate::window::{Calendar, Period, Schedule};

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
            "partials_collection",
            "VCMETRICS_PARTIALS_COLLECTION",
            &mut config.partials_collection,
        ),
        collection(
            "user_sets_collection",
            "VCMETRICS_USER_SETS_COLLECTION",
            &mut config.user_sets_collection,
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
        if let Some(incremental) = settings.get::<bool>("incremental", &[]) {
            if incremental && period != Period::Hourly {
                settings.problem(
                    &key("incremental"),
                    "only the hourly period can run incrementally (its distinct users are kept \
                     per window; the longer periods read their windows whole)",
                );
            } else {
                target.incremental = incremental;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

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
        assert_eq!(c.period(Period::Hourly).schedule.to_string(), "5 * * * * *");
        assert_eq!(c.period(Period::Hourly).lookback, 3);
        // The long periods leave late events to the late-event scan.
        assert_eq!(c.period(Period::Daily).lookback, 0);
        assert_eq!(c.period(Period::Monthly).lookback, 0);
        assert!(c.period(Period::Monthly).include_open);
        assert_eq!(c.state_collection, "vcmetricsstate");
        assert_eq!(c.lease_ttl, Duration::from_secs(30));
    }

    #[test]
    fn disabling_late_events_without_a_lookback_is_a_caution_per_period_it_leaves_uncovered() {
        assert!(from_toml("", &[]).unwrap().cautions().is_empty());
        let c = from_toml("[late_events]\nenabled = false", &[]).unwrap();
        let cautions = c.cautions();
        // Hourly has a lookback (and is incremental); the long periods have none.
        assert_eq!(cautions.len(), 3, "{cautions:?}");
        assert!(
            cautions[0].starts_with("periods.daily.lookback is 0 and late_events.enabled is false")
        );
        assert!(cautions.iter().all(|c| c.contains("set a lookback")));
        let covered = from_toml(
            "[late_events]\nenabled = false\n[periods.daily]\nlookback = 2\n[periods.weekly]\nlookback = 1\n[periods.monthly]\nlookback = 1",
            &[],
        )
        .unwrap();
        assert!(covered.cautions().is_empty());
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
    fn only_the_hourly_period_may_run_incrementally() {
        let c = from_toml("", &[]).unwrap();
        assert!(c.period(Period::Hourly).incremental);
        assert!(!c.period(Period::Daily).incremental);
        let off = from_toml("[periods.hourly]\nincremental = false", &[]).unwrap();
        assert!(!off.period(Period::Hourly).incremental);
        let err = from_toml("[periods.daily]\nincremental = true", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("periods.daily.incremental: only the hourly period"),
            "{err}"
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
