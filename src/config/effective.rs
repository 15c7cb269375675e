//! The effective configuration as text (`vcmetrics config`): every key, its value and where it
//! came from, in the file's own TOML layout, so that the output can be read as a config file.
//! The connection string's password is redacted; a key without a value (an optional setting
//! left unset) is a comment saying what applies instead.

use std::time::Duration;

use super::{
    redact_uri, Config, Origin, Origins, ARCHIVE_KEYS, LATE_EVENTS_KEYS, PERIOD_KEYS,
    TOP_LEVEL_KEYS,
};
use crate::window::Period;

/// One key of the effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key (`periods.hourly.schedule`).
    pub key: String,
    /// The value as TOML; `None` when the optional setting is unset.
    pub value: Option<String>,
    /// What applies when it is unset.
    pub unset_means: &'static str,
    pub origin: Origin,
}

/// Every key of the configuration, in the order of the reference, with its value and origin.
pub fn entries(config: &Config, origins: &Origins) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut add = |key: String, value: Option<String>, unset_means: &'static str| {
        let origin = origins.get(&key).cloned().unwrap_or(Origin::Default);
        entries.push(Entry {
            key,
            value,
            unset_means,
            origin,
        });
    };
    for key in TOP_LEVEL_KEYS {
        if matches!(key, "periods" | "late_events" | "archive") {
            continue;
        }
        let (value, unset_means) = top_level_value(config, key);
        add(key.to_owned(), value, unset_means);
    }
    for period in Period::ALL {
        let p = config.period(period);
        for key in PERIOD_KEYS {
            let value = match key {
                "chunk_windows" => p.chunk_windows.to_string(),
                "schedule" => string(&p.schedule.to_string()),
                "lookback" => p.lookback.to_string(),
                "include_open" => p.include_open.to_string(),
                "incremental" => p.incremental.to_string(),
                _ => p.max_windows_per_run.to_string(),
            };
            add(format!("periods.{period}.{key}"), Some(value), "");
        }
    }
    let late = &config.late_events;
    for key in LATE_EVENTS_KEYS {
        let value = match key {
            "enabled" => late.enabled.to_string(),
            "scan_limit" => late.scan_limit.to_string(),
            _ => duration(late.settle),
        };
        add(format!("late_events.{key}"), Some(value), "");
    }
    let archive = &config.archive;
    for key in ARCHIVE_KEYS {
        let (value, unset_means) = match key {
            "collection" => (Some(string(&archive.collection)), ""),
            "database" => (archive.database.as_deref().map(string), "the `database`"),
            "after" => (
                archive.after.map(duration),
                "the audit log's TTL minus 7 days",
            ),
            "retention" => (archive.retention.map(duration), "kept forever"),
            "schedule" => (
                archive.schedule.as_ref().map(|s| string(&s.to_string())),
                "the daemon never archives",
            ),
            _ => (Some(archive.batch_size.to_string()), ""),
        };
        add(format!("archive.{key}"), value, unset_means);
    }
    entries
}

/// A top-level key's value, or what applies when it is unset.
fn top_level_value(config: &Config, key: &str) -> (Option<String>, &'static str) {
    let value = match key {
        "mongodb_uri" => string(&redact_uri(&config.mongodb_uri)),
        "database" => string(&config.database),
        "audit_collection" => string(&config.audit_collection),
        "metrics_collection" => string(&config.metrics_collection),
        "staging_collection" => string(&config.staging_collection),
        "partials_collection" => string(&config.partials_collection),
        "user_sets_collection" => string(&config.user_sets_collection),
        "state_collection" => string(&config.state_collection),
        "sessions_collection" => string(&config.sessions_collection),
        "timezone" => string(config.calendar.time_zone().name()),
        "week_start" => string(weekday_name(config.calendar.week_start())),
        "audit_ttl" => duration(config.audit_ttl),
        "audit_retention" => {
            return (
                config.audit_retention.map(duration),
                "read from the audit log's TTL index",
            )
        }
        "start_from" => {
            return (
                config.start_from.map(|t| string(&t.to_rfc3339())),
                "the current month's first window",
            )
        }
        "lease_ttl" => duration(config.lease_ttl),
        "instance_id" => string(&config.instance_id),
        "shutdown_grace" => duration(config.shutdown_grace),
        "listen" => string(&config.listen.to_string()),
        "web_config_file" => {
            return (
                config
                    .web_config_file
                    .as_ref()
                    .map(|p| string(&p.display().to_string())),
                "plain HTTP, no authentication",
            )
        }
        "top_error_codes" => config.top_error_codes.to_string(),
        "chunks_in_flight" => config.chunks_in_flight.to_string(),
        "metrics_refresh" => duration(config.metrics_refresh),
        "aggregate_timeout" => duration(config.aggregate_timeout),
        "stuck_call_after" => duration(config.stuck_call_after),
        _ => duration(config.session_rules_lookback),
    };
    (Some(value), "")
}

fn weekday_name(day: chrono::Weekday) -> &'static str {
    use chrono::Weekday::*;
    match day {
        Mon => "monday",
        Tue => "tuesday",
        Wed => "wednesday",
        Thu => "thursday",
        Fri => "friday",
        Sat => "saturday",
        Sun => "sunday",
    }
}

/// A TOML string, escaped as TOML wants.
fn string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A duration as the configuration writes it: the largest whole unit (`180d`, `30s`).
fn duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let text = if d.subsec_nanos() != 0 {
        humantime::format_duration(d).to_string()
    } else if seconds != 0 && seconds.is_multiple_of(86_400) {
        format!("{}d", seconds / 86_400)
    } else if seconds != 0 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds != 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    };
    string(&text)
}

/// The configuration as TOML with each key's origin in a comment, under a header naming the
/// file.
pub fn render(config: &Config, origins: &Origins, file: Option<&std::path::Path>) -> String {
    let mut out = format!(
        "# vcmetrics {}: the effective configuration ({}).\n\
         # Each key's origin follows it: default, file, or the environment variable that set it.\n",
        env!("CARGO_PKG_VERSION"),
        file.map_or_else(|| "no file".to_owned(), |f| format!("file {}", f.display())),
    );
    let mut table = String::new();
    for entry in entries(config, origins) {
        let (section, name) = entry
            .key
            .rsplit_once('.')
            .unwrap_or(("", entry.key.as_str()));
        if section != table {
            out.push_str(&format!("\n[{section}]\n"));
            table = section.to_owned();
        }
        let origin = match &entry.origin {
            Origin::Default => "default".to_owned(),
            Origin::File => "file".to_owned(),
            Origin::Environment(name) => format!("${name}"),
        };
        match &entry.value {
            Some(value) => out.push_str(&format!("{name} = {value}  # {origin}\n")),
            None => out.push_str(&format!(
                "# {name} is not set: {}  # {origin}\n",
                entry.unset_means
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate_traced;

    fn effective(text: &str, env: &[(&str, &str); 2]) -> Vec<Entry> {
        let (config, origins) = validate_traced(text.parse().unwrap(), env).unwrap();
        entries(&config, &origins)
    }

    fn entry<'a>(entries: &'a [Entry], key: &str) -> &'a Entry {
        entries.iter().find(|e| e.key == key).unwrap()
    }

    #[test]
    fn every_key_is_listed_once_with_its_value_and_origin() {
        let entries = effective(
            "database = \"platform\"\n[periods.hourly]\nschedule = \"0 */10 * * * *\"\n\
             [archive]\nafter = \"150d\"",
            &[
                ("MONGODB_URI", "mongodb://vc:s3cret@db:27017/"),
                ("VCMETRICS_LEASE_TTL", "45s"),
            ],
        );
        let tables = 3;
        assert_eq!(
            entries.len(),
            TOP_LEVEL_KEYS.len() - tables
                + 4 * PERIOD_KEYS.len()
                + LATE_EVENTS_KEYS.len()
                + ARCHIVE_KEYS.len()
        );
        let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), entries.len(), "no key twice");

        let uri = entry(&entries, "mongodb_uri");
        assert_eq!(
            uri.value.as_deref(),
            Some("\"mongodb://vc:****@db:27017/\"")
        );
        assert_eq!(uri.origin, Origin::Environment("MONGODB_URI".to_owned()));
        let lease = entry(&entries, "lease_ttl");
        assert_eq!(lease.value.as_deref(), Some("\"45s\""));
        assert_eq!(
            lease.origin,
            Origin::Environment("VCMETRICS_LEASE_TTL".to_owned())
        );
        let database = entry(&entries, "database");
        assert_eq!(
            (database.value.as_deref(), &database.origin),
            (Some("\"platform\""), &Origin::File)
        );
        let schedule = entry(&entries, "periods.hourly.schedule");
        assert_eq!(schedule.value.as_deref(), Some("\"0 */10 * * * *\""));
        assert_eq!(schedule.origin, Origin::File);
        let daily = entry(&entries, "periods.daily.schedule");
        assert_eq!(daily.origin, Origin::Default);
        assert_eq!(
            entry(&entries, "audit_ttl").value.as_deref(),
            Some("\"180d\"")
        );
        assert_eq!(
            entry(&entries, "archive.after").value.as_deref(),
            Some("\"150d\"")
        );
        assert_eq!(entry(&entries, "archive.retention").value, None);
    }

    #[test]
    fn the_rendered_text_is_a_config_file_that_gives_the_same_configuration() {
        let text = "timezone = \"Europe/Berlin\"\nweek_start = \"sunday\"\nstart_from = \
                    \"2026-03-01T00:00:00Z\"\n[late_events]\nsettle = \"90s\"\n\
                    [archive]\nschedule = \"0 15 3 * * *\"\nbatch_size = 500";
        let env = [
            ("VCMETRICS_INSTANCE_ID", "a"),
            ("VCMETRICS_AUDIT_TTL", "90d"),
        ];
        let (config, origins) = validate_traced(text.parse().unwrap(), &env).unwrap();
        let rendered = render(&config, &origins, None);
        assert!(rendered.contains("audit_ttl = \"90d\"  # $VCMETRICS_AUDIT_TTL\n"));
        assert!(rendered.contains(
            "# audit_retention is not set: read from the audit log's TTL index  # default\n"
        ));
        let again = crate::config::from_toml(&rendered, &[]).unwrap();
        assert_eq!(format!("{again:?}"), format!("{config:?}"));
    }
}
