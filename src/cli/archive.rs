//! `vcmetrics archive`: move audit events older than `archive.after` (or `--before`) into the
//! archive collection before the audit log's TTL deletes them.

use chrono::{DateTime, Utc};

use super::parse_instant;
use crate::archive::retention::{audit_retention, horizon};
use crate::archive::run::written_before;
use crate::archive::state::{cutoff, in_days};
use crate::archive::storage::{ArchiveStore, RetentionStore};
use crate::archive::{archive, ArchiveOutcome, ArchiveState, EventSpan};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::Result;
use crate::store::MongoStore;

/// `println!` that stops quietly when stdout is closed (`vcmetrics archive | head`): the
/// archive's work is done by then.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive the events timestamped before this instant instead of those older than
    /// archive.after: RFC 3339, a date or local date-time in the configured time zone, `now`
    /// or `now-<duration>`.
    #[arg(long, conflicts_with = "drop_before")]
    pub before: Option<String>,
    /// Instead of archiving: delete the archived events timestamped before this instant from
    /// the archive, after they were dumped elsewhere (`mongodump --query`, see docs/archival.md's
    /// archival runbook). Recorded first: recompute then refuses windows before it.
    #[arg(long)]
    pub drop_before: Option<String>,
    /// Move nothing; print how many events would move, their span, and where the archive
    /// stands.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let now = Utc::now();
    let before = args
        .before
        .as_deref()
        .map(|s| parse_instant("--before", s, config.calendar.time_zone()))
        .transpose()?;
    let drop_before = args
        .drop_before
        .as_deref()
        .map(|s| parse_instant("--drop-before", s, config.calendar.time_zone()))
        .transpose()?;
    let store = MongoStore::connect(config).await?;
    let result = match drop_before {
        Some(before) => drop_command(&store, config, before, args.dry_run).await,
        None => archive_command(&store, config, now, before, args.dry_run).await,
    };
    store.shutdown().await;
    result
}

async fn archive_command(
    store: &MongoStore,
    config: &Config,
    now: DateTime<Utc>,
    before: Option<DateTime<Utc>>,
    dry_run: bool,
) -> Result<()> {
    let ttl = audit_retention(store, config).await?;
    let cutoff = cutoff(now, config.archive.after, ttl, before)?;
    let target = archive_name(config);
    // What a run starting now would take; the run itself reads the mark again under its lock.
    let written_before = written_before(store, config).await?;
    let waiting = store.archivable_span(cutoff, written_before).await?;
    let held_back = match written_before {
        Some(_) => store
            .archivable_span(cutoff, None)
            .await?
            .count
            .saturating_sub(waiting.count),
        None => 0,
    };
    if dry_run {
        say!(
            "would move {} into {target} (timestamped before {}){}",
            describe_events(&waiting),
            cutoff.to_rfc3339(),
            ttl.map_or(String::new(), |t| format!(
                "; the audit log's TTL is {}",
                in_days(t)
            ))
        );
        if held_back > 0 {
            say!("{}", describe_held_back(held_back));
        }
        let state = print_state(store, config, ttl, now).await?;
        if let Some((holder, until)) = &state.holder {
            say!(
                "a run ({holder}) holds the archive lock until {}",
                until.to_rfc3339()
            );
        }
        say!("(dry run: nothing moved)");
        return Ok(());
    }
    let bar = super::progress_bar(
        waiting.count,
        "[{bar:40}] {pos}/{len} events archived, {per_sec}, eta {eta}",
    );
    // Ctrl-C or SIGTERM: stop after the current batch and give the lock up, so the next run
    // can start at once; a second signal exits at once (the batch stays recorded).
    let (signalled, stop) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(super::forward_signals(signalled));
    let outcome = archive(
        store,
        config,
        &SystemClock,
        &config.instance_id,
        cutoff,
        || *stop.borrow(),
        |moved| bar.set_position(moved),
    )
    .await;
    signals.abort();
    bar.finish_and_clear();
    let outcome = outcome?;
    if outcome.finished.is_none() {
        say!(
            "stopped by a signal after {} events in {} batches; run it again to go on",
            outcome.moved,
            outcome.batches
        );
        return Err(crate::error::Error::Interrupted(
            "the archive run stopped after its current batch; nothing is half-moved".to_owned(),
        ));
    }
    print_summary(&outcome, &target, &waiting);
    if held_back > 0 {
        say!("{}", describe_held_back(held_back));
    }
    print_state(store, config, ttl, now).await?;
    Ok(())
}

/// Prints where the archive stands (see [`describe_state`]); returns its record.
async fn print_state(
    store: &MongoStore,
    config: &Config,
    ttl: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Result<ArchiveState> {
    let state = store.archive_state().await?;
    let complete_from =
        state.complete_from(horizon(ttl, now), horizon(config.archive.retention, now));
    let archived = store.archive_span().await?;
    say!("{}", describe_state(&state, &archived, complete_from));
    Ok(state)
}

/// `--drop-before`: the archive's oldest part goes (it was dumped elsewhere), and the record
/// says so before it goes.
async fn drop_command(
    store: &MongoStore,
    config: &Config,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<()> {
    let target = archive_name(config);
    let count = store.count_archived_before(before).await?;
    if dry_run {
        say!(
            "would drop {count} archived events timestamped before {} from {target}; windows \
             before then could no longer be rebuilt (dry run: nothing dropped)",
            before.to_rfc3339()
        );
        return Ok(());
    }
    let dropped = store.drop_archived_before(before).await?;
    say!(
        "dropped {dropped} archived events timestamped before {} from {target}; recompute now \
         refuses windows before then",
        before.to_rfc3339()
    );
    Ok(())
}

/// `database.collection` of the archive.
fn archive_name(config: &Config) -> String {
    format!(
        "{}.{}",
        config
            .archive
            .database
            .as_deref()
            .unwrap_or(&config.database),
        config.archive.collection
    )
}

fn describe_events(span: &EventSpan) -> String {
    match (span.oldest, span.newest) {
        (Some(oldest), Some(newest)) => format!(
            "{} audit events, {} .. {}",
            span.count,
            oldest.to_rfc3339(),
            newest.to_rfc3339()
        ),
        _ => format!("{} audit events", span.count),
    }
}

/// The events before the cutoff that wait: written since the lowest late-event mark.
fn describe_held_back(count: u64) -> String {
    format!(
        "audit events left waiting in the audit log: {count} (timestamped before the cutoff but \
         written after the lowest late-event mark: a late-event scan has yet to see them; a \
         later run moves them)"
    )
}

fn print_summary(outcome: &ArchiveOutcome, target: &str, waiting: &EventSpan) {
    say!(
        "moved {} of {} into {target} in {} batches{}",
        outcome.moved,
        describe_events(waiting),
        outcome.batches,
        if outcome.resumed {
            " (after finishing the batch a previous run left half-way)"
        } else {
            ""
        }
    );
}

/// Where the archive stands: what it holds, what is archived, from when the audit log and the
/// archive together are complete, and a batch left half-way.
fn describe_state(
    state: &ArchiveState,
    archived: &EventSpan,
    complete_from: Option<DateTime<Utc>>,
) -> String {
    let mut lines = vec![format!(
        "archive: about {}",
        describe_events(archived).replace(" audit", "")
    )];
    match &state.finished {
        Some(f) => {
            lines.push(format!(
                "last run finished {}, moved {} events; every event before {} is archived",
                f.at.to_rfc3339(),
                f.moved,
                f.archived_before.to_rfc3339()
            ));
        }
        None => lines.push("no archive run has finished yet".to_owned()),
    }
    lines.push(match complete_from {
        Some(from) => format!(
            "audit log and archive together hold every event from {}: recompute and verify \
             rebuild windows from there on",
            from.to_rfc3339()
        ),
        None => "audit log and archive together hold every event ever written".to_owned(),
    });
    if let Some(dropped) = state.dropped_before {
        lines.push(format!(
            "archived events before {} were dropped (archive --drop-before)",
            dropped.to_rfc3339()
        ));
    }
    if let Some(batch) = &state.batch {
        lines.push(format!(
            "a batch of {} events is {} (a run stopped half-way; the next run finishes it)",
            batch.ids.len(),
            batch.phase.as_str()
        ));
    }
    lines.join("\n")
}
