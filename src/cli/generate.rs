//! `vcmetrics generate`: write realistic audit events into the configured audit collection.

use futures_util::{StreamExt, TryStreamExt};
use tracing::info;

use super::parse_instant;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::generate::{Events, Plan};
use crate::store::MongoStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many events to write.
    #[arg(long)]
    pub events: usize,
    /// Earliest session start (same time forms as recompute; also `now` and `now-30d`).
    #[arg(long)]
    pub from: String,
    /// Latest session start (exclusive).
    #[arg(long)]
    pub to: String,
    /// Size of the user pool (the first tenth act as psychologists).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Seed: the same seed and arguments write the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events per unordered insertMany.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Keep going: after the first batch, every DURATION write --events more events spread over
    /// the last DURATION (a live trickle for demos). Stops on SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<std::time::Duration>,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let tz = config.calendar.time_zone();
    let (from, to) = (
        parse_instant("--from", &args.from, tz)?,
        parse_instant("--to", &args.to, tz)?,
    );
    if from >= to {
        return Err(Error::Usage("--from must be before --to".to_owned()));
    }
    if args.batch_size == 0 || args.users == 0 {
        return Err(Error::Usage(
            "--batch-size and --users must be positive".to_owned(),
        ));
    }
    let store = MongoStore::connect(config).await?;
    let plan = Plan {
        events: args.events,
        from,
        to,
        users: args.users,
        seed: args.seed,
    };
    let result = write(&store, &plan, args.batch_size).await;
    let result = match (result, args.every) {
        (Ok(()), Some(every)) => trickle(&store, plan, args.batch_size, every).await,
        (result, _) => result,
    };
    store.shutdown().await;
    result
}

/// Every `every`, writes the same number of events over the last `every`, with a new seed.
async fn trickle(
    store: &MongoStore,
    mut plan: Plan,
    batch_size: usize,
    every: std::time::Duration,
) -> Result<()> {
    let span = chrono::Duration::from_std(every)
        .map_err(|_| Error::Usage("--every is too long".to_owned()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
        plan.seed = plan.seed.wrapping_add(1);
        plan.to = chrono::Utc::now();
        plan.from = plan.to - span;
        write(store, &plan, batch_size).await?;
    }
}

/// Unordered insertMany commands sent at once.
const INSERTS_IN_FLIGHT: usize = 2;

async fn write(store: &MongoStore, plan: &Plan, batch_size: usize) -> Result<()> {
    let (from, to) = (plan.from, plan.to);
    let bar = super::progress_bar(
        plan.events as u64,
        "[{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}",
    );
    // Late events are written after all the others, as they arrive after their windows closed:
    // held back (2% of them) while the rest is generated and written as it comes, so memory
    // stays at a few batches whatever the count.
    let mut held_back = Vec::new();
    let mut total = 0;
    let on_time = Events::new(plan).filter_map(|e| {
        total += 1;
        if e.late {
            held_back.push(e.document);
            None
        } else {
            Some(e.document)
        }
    });
    insert_in_batches(store, on_time, batch_size, &bar).await?;
    let late = held_back.len();
    insert_in_batches(store, held_back.into_iter(), batch_size, &bar).await?;
    bar.finish_and_clear();
    info!(events = total, late, from = %from.to_rfc3339(), to = %to.to_rfc3339(), seed = plan.seed, "generated");
    println!(
        "wrote {} events ({late} late) between {} and {}",
        total,
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    Ok(())
}

/// Inserts `documents` in unordered batches of `batch_size`, two batches in flight: the server
/// writes one while the next one travels, which keeps generate close to a plain batched
/// insert_many (see the MongoDB benchmark). The documents move into their batches; nothing is
/// copied.
async fn insert_in_batches(
    store: &MongoStore,
    mut documents: impl Iterator<Item = bson::Document>,
    batch_size: usize,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let batches = std::iter::from_fn(|| {
        let batch: Vec<_> = documents.by_ref().take(batch_size).collect();
        (!batch.is_empty()).then_some(batch)
    });
    let mut inserts = futures_util::stream::iter(batches.map(|batch| {
        let n = batch.len() as u64;
        async move { store.insert_audit_events(batch).await.map(|()| n) }
    }))
    .buffered(INSERTS_IN_FLIGHT);
    while let Some(n) = inserts.try_next().await? {
        bar.inc(n);
    }
    Ok(())
}
