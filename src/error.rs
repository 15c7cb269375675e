//! The library's error type, and the process exit code each kind of failure maps to.

use crate::config::ConfigError;
use crate::rollup::pipeline::PipelineError;
use crate::rollup::window_metrics::NoDate;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::window::BadInstant> for Error {
    fn from(e: crate::window::BadInstant) -> Self {
        Error::Usage(e.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line arguments: `--from` after `--to`, an unparsable time, ...
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("MongoDB {operation} failed")]
    Mongo {
        operation: &'static str,
        #[source]
        source: mongodb::error::Error,
    },
    /// No server answered within the driver's server selection timeout. One line, the cause
    /// first; the driver's detail is logged at debug level.
    #[error("cannot reach MongoDB at {address} ({cause}) after {}", humantime::format_duration(*after))]
    Unreachable {
        address: String,
        cause: &'static str,
        after: std::time::Duration,
    },
    /// The server stopped a command at the time limit vcmetrics sent with it; nothing of the
    /// run counts as done.
    #[error(
        "MongoDB {operation} exceeded its time limit of {} (config key `aggregate_timeout`, \
         VCMETRICS_AGGREGATE_TIMEOUT): raise it, or lower the period's chunk_windows",
        humantime::format_duration(*limit)
    )]
    TimeLimit {
        operation: &'static str,
        limit: std::time::Duration,
        #[source]
        source: mongodb::error::Error,
    },
    #[error("MongoDB {operation} failed: {message}")]
    MongoWrite {
        operation: &'static str,
        message: String,
    },
    #[error(transparent)]
    MetricsDocument(#[from] NoDate),
    /// A safety guard stopped the command: it would have destroyed or hidden data.
    #[error("refused: {0}")]
    Refused(String),
    /// A command stopped by SIGINT or SIGTERM before it was done (what it did is kept).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// Another run holds what this one needs (the archive lock), or kept changing it.
    #[error("busy: {0}")]
    Busy(String),
    /// `vcmetrics health`: the daemon did not answer 200.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    #[error("metrics registry")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for SIGTERM")]
    Signal(#[source] std::io::Error),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    /// `verify` found stored documents that differ from what the audit log says.
    #[error("{windows} window(s) differ from the audit log")]
    Drift { windows: usize },
    /// `check sessions` found sessions that break the schema's rules.
    #[error("{sessions} session rule violation(s)")]
    RulesBroken { sessions: u64 },
}

/// An error with its whole cause chain, `outer: cause: root cause`, for log fields.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    pub fn mongo(operation: &'static str) -> impl FnOnce(mongodb::error::Error) -> Error {
        move |source| Error::Mongo { operation, source }
    }

    /// The documented exit code (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Drift { .. } | Error::RulesBroken { .. } => 3,
            Error::Refused(_) => 4,
            Error::Busy(_) => 5,
            Error::Interrupted(_) => 130,
            Error::Pipeline(_)
            | Error::Mongo { .. }
            | Error::Unreachable { .. }
            | Error::TimeLimit { .. }
            | Error::MongoWrite { .. }
            | Error::MetricsDocument(_)
            | Error::Output(_)
            | Error::Signal(_)
            | Error::Unhealthy(_)
            | Error::Metrics(_)
            | Error::Listen { .. } => 1,
        }
    }

    /// Every value [`Error::metric_label`] can return: the `kind` label of
    /// `vcmetrics_run_errors_total`, each exported from the start so an alert on it can fire.
    pub const METRIC_LABELS: [&'static str; 14] = [
        "usage",
        "config",
        "pipeline",
        "mongodb",
        "time_limit",
        "metrics_document",
        "refused",
        "busy",
        "output",
        "signal",
        "metrics",
        "unhealthy",
        "listen",
        "drift",
    ];

    /// A short, bounded label for counting failures by kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::Pipeline(_) => "pipeline",
            Error::Mongo { .. } | Error::MongoWrite { .. } | Error::Unreachable { .. } => "mongodb",
            Error::TimeLimit { .. } => "time_limit",
            Error::MetricsDocument(_) => "metrics_document",
            Error::Refused(_) => "refused",
            Error::Busy(_) => "busy",
            Error::Output(_) => "output",
            Error::Signal(_) | Error::Interrupted(_) => "signal",
            Error::Metrics(_) => "metrics",
            Error::Unhealthy(_) => "unhealthy",
            Error::Listen { .. } => "listen",
            Error::Drift { .. } | Error::RulesBroken { .. } => "drift",
        }
    }
}
