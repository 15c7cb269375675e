//! The keys a configuration file may have: anything else is a problem of its own.

/// The keys of the file's top level (`periods`, `late_events` and `archive` are tables).
pub const TOP_LEVEL_KEYS: [&str; 28] = [
    "mongodb_uri",
    "database",
    "audit_collection",
    "metrics_collection",
    "staging_collection",
    "partials_collection",
    "user_sets_collection",
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
pub const PERIOD_KEYS: [&str; 6] = [
    "chunk_windows",
    "schedule",
    "lookback",
    "include_open",
    "max_windows_per_run",
    "incremental",
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
