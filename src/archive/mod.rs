//! Archival: moving audit events older than `archive.after` into the archive collection before
//! the audit log's TTL deletes them, so that every window stays rebuildable.
//!
//! - [`state`]: what the state collection's `archive` document records (how far the archive
//!   reaches, from when audit log and archive together are complete, the batch in flight), and
//!   the pure rules built on it: the cutoff of a run, which chunks read the archive and what
//!   they leave out, the completeness point after a run.
//! - [`run`]: one archive run through the store: bounded batches, each copied, confirmed, then
//!   deleted from the audit log, with the batch recorded before it moves.
//!
//! Raw events never pass through the daemon: the copy is a server-side `$merge`, and only the
//! batch's `_id`s come back.

pub mod retention;
pub mod run;
pub mod state;
pub mod storage;

pub use run::{archive, ArchiveOutcome};
pub use state::{ArchiveState, EventSpan, Finished, MovingBatch, Phase};
