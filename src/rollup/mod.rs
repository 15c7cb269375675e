//! Rolling windows up: plan a range → bind the pipelines → execute chunk by chunk through the
//! store → report what changed.
//!
//! Used by `recompute`, `verify`, `pipelines` and the daemon's runs. No time arithmetic of its own
//! (that is `window`), no I/O of its own (that is `store`).
//!
//! - [`plan`]: the closed windows of a range, the one chunk planner, and the retention guard.
//! - [`pipeline`]: the embedded `pipelines/*.json` files, bound into one chunk's commands
//!   ([`commands`], reading the archive too where it must).
//! - [`execute`]: chunks through the store, up to `chunks_in_flight` at once.
//! - [`late_scan`]: the windows of events written late, found by their `_id`s.
//! - [`report`]: what happened to each window.
//! - [`tick`]: the hourly period's incremental runs: partials per minute of writes, user sets.

mod archive_read;
pub mod commands;
pub mod execute;
pub mod late_scan;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod storage;
pub mod tick;

pub use execute::{plan_chunks, process, Batch, Mode};
pub use plan::{check_retention, chunks, describe, plan_range, RangePlan};
pub use report::{Outcome, Summary, WindowReport};
