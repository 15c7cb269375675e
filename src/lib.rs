//! vcmetrics turns a video-call platform's MongoDB audit log (`videocallauditlogs`) into
//! hourly, daily, weekly and monthly `videocallmetrics` documents, computed server-side by
//! aggregation pipelines that end in `$merge`.
//!
//! # Layout
//! - [`window`]: periods and window boundaries in a time zone — the only time arithmetic.
//! - [`pipeline`]: the embedded `pipelines/*.json` files, parameter binding, command building.
//! - [`metrics`]: the metrics document's fields, reading documents back, diffs.
//! - [`store`]: the storage trait and its MongoDB implementation — the only I/O.
//! - [`rollup`]: one range of windows → chunks → seed, aggregate, compare.
//! - [`refresh`]: which windows one scheduled run refreshes (open, lookback, catch-up).
//! - [`schedule`]: cron schedules evaluated in the configured time zone.
//! - [`scheduler`]: the daemon — ticks → runs, overlap guard, watermark, shutdown.
//! - [`lease`]: the leader lease between replicas.
//! - [`reachability`]: MongoDB up/down with backoff.
//! - [`status`]: the daemon's own counters and state, and their Prometheus handles.
//! - [`exporter`]: `/metrics` (daemon and call metrics), `/healthz`, `/readyz`.
//! - [`clock`]: wall-clock time as an input.
//! - [`generate`]: realistic demo and benchmark audit events.
//! - [`migrate`]: the indexes both collections need, and the plan to create them.
//! - [`config`]: the validated configuration (file + environment).
//! - [`cli`]: one module per subcommand.
//! - [`error`]: the error type and exit codes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod exporter;
pub mod generate;
pub mod lease;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod reachability;
pub mod refresh;
pub mod rollup;
pub mod schedule;
pub mod scheduler;
pub mod status;
pub mod store;
pub mod window;
