//! `vcmetrics run`: the long-running daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cli::migrate;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::daemon::reachability::MAX_BACKOFF;
use crate::daemon::status::Status;
use crate::daemon::Daemon;
use crate::error::{Chain, Error, Result};
use crate::exporter::call_metrics_cache::{keep_fresh, CallMetricsCache};
use crate::exporter::server::{serve, Endpoint, Security};
use crate::exporter::session_metrics::SessionMetricsCache;
use crate::store::MongoStore;
use crate::window::Period;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First create the indexes vcmetrics needs, as `vcmetrics migrate` does (idempotent; waits
    /// for MongoDB to answer; never changes an existing TTL). Needs a user that may create
    /// indexes: with the least-privilege daemon role, run `vcmetrics migrate` as its own job.
    #[arg(long)]
    pub migrate: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    info!(
        uri = %config.redacted_uri(),
        database = %config.database,
        timezone = %config.calendar.time_zone(),
        instance = %config.instance_id,
        "vcmetrics {} starting",
        env!("CARGO_PKG_VERSION")
    );
    for caution in config.cautions() {
        warn!("{caution}");
    }
    // A taken port fails the start (exit 1) before anything else runs.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen.to_string(),
            source,
        })?;
    let security = Security::new(config.web.as_ref()).map_err(|message| {
        Error::Config(crate::config::ConfigError::Invalid(vec![
            crate::config::Problem {
                key: "web_config_file".to_owned(),
                message,
            },
        ]))
    })?;
    // The driver connects lazily: an unreachable server is not an error here, the daemon waits.
    let store = Arc::new(MongoStore::connect(config).await?);
    let status = Arc::new(Status::new()?);
    let config = Arc::new(config.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(super::forward_signals(shutdown_tx));

    let calls = Arc::new(CallMetricsCache::default());
    let sessions = Arc::new(SessionMetricsCache::new()?);
    let endpoint = Arc::new(
        Endpoint::new(status.clone(), calls.clone(), SystemClock).with_sessions(sessions.clone()),
    );
    info!(listen = %config.listen, scheme = security.describe(), "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(serve(listener, endpoint, security, shutdown_rx.clone()));
    let refresher = tokio::spawn(keep_fresh(
        store.clone(),
        config.clone(),
        SystemClock,
        status.clone(),
        (calls, sessions),
        shutdown_rx.clone(),
    ));

    let mut migrate_shutdown = shutdown_rx.clone();
    if args.migrate {
        migrate_when_reachable(&store, &config, &mut migrate_shutdown).await?;
    }
    for period in Period::ALL {
        info!(period = %period, schedule = %config.period(period).schedule, "scheduled");
    }
    // No extra ticks: the schedules decide when periods run.
    let (_, no_extra_ticks) = mpsc::channel(1);
    let daemon = Daemon::new(store.clone(), config.clone(), SystemClock, status);
    let result = daemon.run(no_extra_ticks, shutdown_rx).await;
    // Both stop on the same shutdown signal; the refresher's store handle must be gone before
    // the client can be shut down.
    let _ = server.await;
    let _ = refresher.await;

    if let Some(store) = Arc::into_inner(store) {
        store.shutdown().await;
    }
    info!("stopped");
    result
}

/// `--migrate`: `vcmetrics migrate`'s index step, its lines logged, retried with backoff (1 s
/// doubling to 60 s) while MongoDB does not answer, given up at shutdown. Indexes it will not
/// change on its own (a differing TTL) are logged and the daemon starts anyway; any other
/// failure (for example a user not allowed to create indexes) stops the start.
async fn migrate_when_reachable(
    store: &MongoStore,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Duration::from_secs(1);
    let defaults = migrate::Args::default();
    let mut log = |line: String| info!("migrate: {line}");
    loop {
        let attempt = migrate::migrate(store, config, &defaults, &mut log);
        let result = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            result = attempt => result,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(Error::Refused(reason)) => {
                warn!(%reason, "--migrate left indexes it does not change on its own; starting anyway");
                return Ok(());
            }
            Err(e @ Error::Unreachable { .. }) => {
                warn!(error = %Chain(&e), "--migrate waits for MongoDB; retrying in {}s", backoff.as_secs());
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}
