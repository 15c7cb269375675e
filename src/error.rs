//! The library's error type, and the process exit code each kind of failure maps to.

use crate::config::ConfigError;
use crate::metrics_document::NoDate;
use crate::pipeline_files::PipelineError;

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
        source: ServerError,
    },
    /// Before moving a mark, a run found that this replica no longer holds the lease it started
    /// under: another replica took it, and the run's writes were fenced off.
    #[error(
        "this replica lost the lease (epoch {epoch}) during the run: its writes were fenced off \
         and no mark moved; the replica holding the lease runs the period"
    )]
    LostLease { epoch: i64 },
    /// The database lacks what `vcmetrics migrate` creates: the server refused a command for
    /// want of an index (a `$merge` needs a unique index on its `on` fields).
    #[error(
        "MongoDB {operation} failed: {cause}: the database is not set up for vcmetrics; run \
         `vcmetrics migrate` (or start the daemon with `vcmetrics run --migrate`)"
    )]
    NotMigrated {
        operation: &'static str,
        cause: ServerError,
    },
    /// No server answered within the driver's server selection timeout. One line, the cause
    /// first; the driver's detail is logged at debug level.
    #[error(
        "cannot reach MongoDB at {address} ({cause}) after {}; {}",
        humantime::format_duration(*after),
        crate::config::WHERE_TO_SET_URI
    )]
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
        source: ServerError,
    },
    #[error("MongoDB {operation} failed: {message}")]
    MongoWrite {
        operation: &'static str,
        message: String,
    },
    #[error(transparent)]
    MetricsDocument(#[from] NoDate),
    /// The database cannot be set up as vcmetrics needs it: for example a collection it
    /// `$merge`s into is sharded where the engine refuses its unique index or the `$merge`.
    #[error("the database cannot be set up for vcmetrics: {0}")]
    Setup(String),
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
    /// A driver error of `operation`: [`Error::NotMigrated`] when the server wants an index
    /// that `migrate` creates, [`Error::Mongo`] otherwise.
    pub fn mongo(operation: &'static str) -> impl FnOnce(mongodb::error::Error) -> Error {
        move |source| {
            let source = ServerError(source);
            if source.is_merge_into_sharded() {
                return Error::Setup(format!(
                    "MongoDB {operation} failed: {source}; the collections vcmetrics $merges into \
                     (metrics_collection, staging_collection, archive.collection) must stay \
                     unsharded on this engine (docs/scaling.md)"
                ));
            }
            if source.is_missing_index() {
                Error::NotMigrated {
                    operation,
                    cause: source,
                }
            } else {
                Error::Mongo { operation, source }
            }
        }
    }

    /// The documented exit code (docs/commands.md, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Drift { .. } | Error::RulesBroken { .. } => 3,
            Error::Refused(_) => 4,
            Error::Busy(_) => 5,
            Error::NotMigrated { .. } | Error::Setup(_) => 6,
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
            | Error::Listen { .. }
            | Error::LostLease { .. } => 1,
        }
    }

    /// Every value [`Error::metric_label`] can return: the `kind` label of
    /// `vcmetrics_run_errors_total`, each exported from the start so an alert on it can fire.
    pub const METRIC_LABELS: [&'static str; 16] = [
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
        "setup",
        "lease",
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
            Error::NotMigrated { .. } | Error::Setup(_) => "setup",
            Error::LostLease { .. } => "lease",
        }
    }
}

/// A driver error as an operator reads it: for a command the server refused, its code name and
/// message (`Location51183: Unable to locate index …`); for anything else, the driver's own
/// words. Never the driver's whole `Display`, which ends in the server's raw reply as bytes.
#[derive(Debug, Clone)]
pub struct ServerError(pub mongodb::error::Error);

impl ServerError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<i32> {
        use mongodb::error::{ErrorKind, WriteFailure};
        match self.0.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code),
            ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
            _ => None,
        }
    }

    /// The server refused a `$merge` (or an upsert) for want of the unique index on its join
    /// fields: MongoDB's and DocumentDB's code 51183 ("Cannot find index to verify that join
    /// fields will be unique" / "Unable to locate index required to confirm join fields are
    /// unique").
    pub fn is_missing_index(&self) -> bool {
        self.code() == Some(51183)
    }

    /// The engine refused a `$merge` into a sharded collection (DocumentDB 0.108's cluster:
    /// "$merge for sharded output collection not supported yet").
    pub fn is_merge_into_sharded(&self) -> bool {
        use mongodb::error::ErrorKind;
        matches!(self.0.kind.as_ref(), ErrorKind::Command(c)
            if c.message.contains("sharded output collection"))
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use mongodb::error::{ErrorKind, WriteFailure};
        match self.0.kind.as_ref() {
            ErrorKind::Command(c) => write_coded(f, c.code, &c.code_name, &c.message),
            ErrorKind::Write(WriteFailure::WriteError(w)) => {
                write_coded(f, w.code, w.code_name.as_deref().unwrap_or(""), &w.message)
            }
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
                f.write_str("write concern: ")?;
                write_coded(f, w.code, &w.code_name, &w.message)
            }
            ErrorKind::InsertMany(e) => match (&e.write_errors, &e.write_concern_error) {
                (Some(errors), _) if !errors.is_empty() => {
                    let first = &errors[0];
                    write!(f, "{} of the documents refused; the first: ", errors.len())?;
                    write_coded(
                        f,
                        first.code,
                        first.code_name.as_deref().unwrap_or(""),
                        &first.message,
                    )
                }
                (_, Some(w)) => {
                    f.write_str("write concern: ")?;
                    write_coded(f, w.code, &w.code_name, &w.message)
                }
                _ => f.write_str("insert failed"),
            },
            // Every other kind's own text is the driver's message (I/O, authentication, server
            // selection, ...), without the raw reply the outer error appends.
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// `CodeName: message`, or `error code N: message` when the server gave no name.
fn write_coded(
    f: &mut std::fmt::Formatter<'_>,
    code: i32,
    code_name: &str,
    message: &str,
) -> std::fmt::Result {
    if code_name.is_empty() {
        write!(f, "error code {code}: {message}")
    } else {
        write!(f, "{code_name}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::error::{CommandError, ErrorKind};

    /// The reply DocumentDB 0.108 sent to the README's first command on an empty database
    /// (`$merge` into a metrics collection without its unique index), as the driver decodes it.
    fn missing_index_reply() -> mongodb::error::Error {
        let reply = bson::doc! {
            "ok": 0.0,
            "errmsg": "Unable to locate index required to confirm join fields are unique",
            "code": 51183,
            "codeName": "Location51183",
        };
        let command: CommandError = bson::from_document(reply).unwrap();
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    #[test]
    fn a_refused_command_shows_its_code_name_and_message_and_never_the_raw_reply() {
        let raw = missing_index_reply();
        // What the driver itself prints: the outer error's kind, labels and reply.
        assert!(raw.to_string().starts_with("Kind: "), "{raw}");
        let error = Error::mongo("aggregate")(raw);
        let text = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(
            text,
            "MongoDB aggregate failed: Location51183: Unable to locate index required to confirm \
             join fields are unique: the database is not set up for vcmetrics; run `vcmetrics \
             migrate` (or start the daemon with `vcmetrics run --migrate`)"
        );
    }

    #[test]
    fn a_missing_index_is_the_setup_exit_code_and_metric_label() {
        let error = Error::mongo("aggregate")(missing_index_reply());
        assert_eq!(error.exit_code(), 6);
        assert_eq!(error.metric_label(), "setup");
        assert!(Error::METRIC_LABELS.contains(&"setup"));
    }

    #[test]
    fn any_other_refusal_keeps_its_code_name_in_the_chain() {
        let reply = bson::doc! { "ok": 0.0, "errmsg": "not authorized on platform to execute command { aggregate: 1 }", "code": 13, "codeName": "Unauthorized" };
        let command: CommandError = bson::from_document(reply).unwrap();
        let error =
            Error::mongo("aggregate")(mongodb::error::Error::from(ErrorKind::Command(command)));
        assert_eq!(error.exit_code(), 1);
        assert_eq!(
            Chain(&error).to_string(),
            "MongoDB aggregate failed: Unauthorized: not authorized on platform to execute command { aggregate: 1 }"
        );
        let unnamed: CommandError =
            bson::from_document(bson::doc! { "ok": 0.0, "errmsg": "boom", "code": 2 }).unwrap();
        assert_eq!(
            ServerError(ErrorKind::Command(unnamed).into()).to_string(),
            "error code 2: boom"
        );
    }
}
