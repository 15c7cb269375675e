//! `vcmetrics run`: the long-running daemon.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{info, warn};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exporter::server::{serve, Endpoint};
use crate::exporter::snapshot::{keep_fresh, CallMetricsCache};
use crate::scheduler::Daemon;
use crate::status::Status;
use crate::store::MongoStore;
use crate::window::Period;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(config: &Config, _args: Args) -> Result<()> {
    info!(
        uri = %config.redacted_uri(),
        database = %config.database,
        timezone = %config.calendar.time_zone(),
        instance = %config.instance_id,
        "vcmetrics {} starting",
        env!("CARGO_PKG_VERSION")
    );
    // A taken port fails the start (exit 1) before anything else runs.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen.to_string(),
            source,
        })?;
    // The driver connects lazily: an unreachable server is not an error here, the daemon waits.
    let store = Arc::new(MongoStore::connect(config).await?);
    let status = Arc::new(Status::new()?);
    let config = Arc::new(config.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(forward_signals(shutdown_tx));

    let calls = Arc::new(CallMetricsCache::default());
    let endpoint = Arc::new(Endpoint::new(status.clone(), calls.clone(), SystemClock));
    info!(listen = %config.listen, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(serve(listener, endpoint, shutdown_rx.clone()));
    let refresher = tokio::spawn(keep_fresh(
        store.clone(),
        config.clone(),
        SystemClock,
        status.clone(),
        calls,
        shutdown_rx.clone(),
    ));

    let (tick_tx, tick_rx) = mpsc::channel(16);
    let mut scheduler = start_scheduler(&config, tick_tx).await?;
    let daemon = Daemon::new(store.clone(), config.clone(), SystemClock, status);
    let result = daemon.run(tick_rx, shutdown_rx).await;
    // Both stop on the same shutdown signal; the refresher's store handle must be gone before
    // the client can be shut down.
    let _ = server.await;
    let _ = refresher.await;

    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %e, "tokio-cron-scheduler did not shut down cleanly");
    }
    if let Some(store) = Arc::into_inner(store) {
        store.shutdown().await;
    }
    info!("stopped");
    result
}

/// One tokio-cron-scheduler job per period, each sending its period as a tick.
async fn start_scheduler(config: &Config, ticks: mpsc::Sender<Period>) -> Result<JobScheduler> {
    let scheduler_error =
        |e: tokio_cron_scheduler::JobSchedulerError| Error::Scheduler(e.to_string());
    let scheduler = JobScheduler::new().await.map_err(scheduler_error)?;
    let tz = config.calendar.time_zone();
    for period in Period::ALL {
        let schedule = config.period(period).schedule.to_string();
        let ticks = ticks.clone();
        let job = Job::new_async_tz(schedule.as_str(), tz, move |_, _| {
            let ticks = ticks.clone();
            Box::pin(async move {
                // A full channel means the daemon is busy; the overlap guard would skip it anyway.
                let _ = ticks.try_send(period);
            })
        })
        .map_err(scheduler_error)?;
        scheduler.add(job).await.map_err(scheduler_error)?;
        info!(period = %period, schedule = %schedule, "scheduled");
    }
    scheduler.start().await.map_err(scheduler_error)?;
    Ok(scheduler)
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once.
async fn forward_signals(shutdown: watch::Sender<bool>) {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        warn!("cannot listen for SIGTERM; stop with SIGINT");
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.send(true);
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    let _ = shutdown.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    warn!("second signal: exiting now");
    std::process::exit(130);
}
