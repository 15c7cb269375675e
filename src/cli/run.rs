//! `vcmetrics run`: the long-running daemon.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::daemon::status::Status;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::exporter::call_metrics_cache::{keep_fresh, CallMetricsCache};
use crate::exporter::server::{serve, Endpoint, Security};
use crate::exporter::session_metrics::SessionMetricsCache;
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
