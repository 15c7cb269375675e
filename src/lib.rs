//! vcmetrics turns a video-call platform's MongoDB audit log (`videocallauditlogs`) into
//! hourly, daily, weekly and monthly `videocallmetrics` documents, computed server-side by
//! aggregation pipelines that end in `$merge`.
//!
//! # Layout, from the top down
//! Every import between folders points down this list: a module imports only from those below
//! it, and no two modules import each other (`tests/layering.rs` fails otherwise).
//!
//! - [`cli`]: one module per subcommand, glue only (plus `config`, `completions` and `man`);
//!   the only place that names [`store::MongoStore`].
//! - [`exporter`]: `/metrics` (the daemon's own metrics and the call metrics), `/healthz`,
//!   `/readyz`. Reads what the daemon records; never writes into it.
//! - [`daemon`]: when each period runs, one run of a period, the leader lease, MongoDB
//!   reachability, whether the database is set up, what it records of its runs
//!   (`records`, `status`) and counts of them (`self_metrics`).
//! - [`store`]: MongoDB through the official driver — the only MongoDB I/O. It implements the
//!   storage each stage states (below), states the daemon's own (marks, lease, the server), and
//!   knows the indexes `migrate` creates and the privileges each role needs.
//! - [`sessions`]: the platform's sessions: the schema's validation rules, its data migration,
//!   the live gauges' queries, and the storage those need (`sessions::storage`).
//! - [`rollup`]: a range of windows → chunks → the bound `pipelines/*.json` (as commands) →
//!   executed through the storage it states (`rollup::storage`) → what changed in each window.
//! - [`archive`]: moving old audit events into the archive before the TTL deletes them, the
//!   record that tells rollups where each event is, the retention horizon, and the storage it
//!   states (`archive::storage`).
//! - [`generate`]: realistic demo and benchmark audit events.
//! - [`error`]: the error type and exit codes.
//! - [`metrics_document`]: the stored metrics document — what the rollup writes, `verify`
//!   compares and the exporter reads: its fields, reading it back, diffs.
//! - [`pipeline_files`]: the `pipelines/` files' Extended JSON and their `$param`s, bound.
//! - [`config`]: the configuration (file + environment), typed and validated.
//! - [`window`]: periods, window boundaries in a time zone, instants on the command line, cron
//!   schedules — the only time arithmetic.
//! - [`clock`]: wall-clock time as an input.
#![forbid(unsafe_code)]

pub mod archive;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod exporter;
pub mod generate;
pub mod metrics_document;
pub mod pipeline_files;
pub mod rollup;
pub mod sessions;
pub mod store;
pub mod window;
