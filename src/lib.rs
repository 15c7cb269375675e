//! vcmetrics turns a video-call platform's MongoDB audit log (`videocallauditlogs`) into
//! hourly, daily, weekly and monthly `videocallmetrics` documents, computed server-side by
//! aggregation pipelines that end in `$merge`.
//!
//! # Layout, in the order data flows
//! - [`config`]: the configuration (file + environment), typed and validated.
//! - [`window`]: periods, window boundaries in a time zone, instants on the command line, cron
//!   schedules — the only time arithmetic.
//! - [`rollup`]: a range of windows → chunks → the bound `pipelines/*.json` → executed through
//!   the store → what changed in each window's document.
//! - [`archive`]: moving old audit events into the archive before the TTL deletes them, and the
//!   record that tells rollups where each event is.
//! - [`sessions`]: the platform's sessions: the schema's validation rules, its data migration,
//!   the live gauges' queries.
//! - [`store`]: the storage trait at the level of the domain, its MongoDB implementation, and
//!   the indexes `migrate` creates — the only MongoDB I/O.
//! - [`daemon`]: when each period runs, one run of a period, the leader lease, MongoDB
//!   reachability, whether the database is set up (its indexes), the daemon's state.
//! - [`exporter`]: `/metrics` (the daemon's own metrics and the call metrics), `/healthz`,
//!   `/readyz`.
//! - [`cli`]: one module per subcommand, glue only (plus `config`, `completions` and `man`).
//! - [`generate`]: realistic demo and benchmark audit events.
//! - [`clock`]: wall-clock time as an input.
//! - [`error`]: the error type and exit codes.
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
