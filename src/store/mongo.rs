//! [`Store`] on a MongoDB deployment, with the official driver.

use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Database, IndexModel};

use super::indexes::WantedIndex;
use super::{
    HeldLease, LateEventStore, LeaseHolder, LeaseStore, MarkStore, PendingRewrite, RetentionStore,
    RollupStore, ServerStore, SessionStore, StoredMetrics, TickStore, LEASE_ID,
};
use crate::archive::ArchiveState;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rollup::commands::{AggregateCommand, DeleteCommand, UpdateCommand};
use crate::rollup::late_scan::{LateScanQuery, LateScanResult};
use crate::rollup::pipeline::Chunk;
use crate::rollup::tick::{Finish, Keep, Kept, TickMark, UsersRead};
use crate::sessions::gauges::{GaugeQueries, SessionGauges};
use crate::window::Period;

fn watermark_id(period: Period) -> String {
    format!("watermark:{period}")
}

/// Beside the watermark: where the period's next late-event scan starts.
fn tick_mark_id(period: Period) -> String {
    format!("incremental:{period}")
}

fn late_mark_id(period: Period) -> String {
    format!("late-events:{period}")
}

/// Beside the marks: the windows of the period to write again once an older leader's last
/// write has landed (`daemon::tenure`).
fn rewrite_id(period: Period) -> String {
    format!("rewrite:{period}")
}

/// How long [`MongoStore::shutdown`] waits for the driver's graceful shutdown.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// [`Store`] on a MongoDB deployment.
#[derive(Clone)]
pub struct MongoStore {
    pub(super) client: Client,
    pub(super) database: Database,
    pub(super) audit_collection: String,
    metrics_collection: String,
    staging_collection: String,
    pub(super) state_collection: String,
    pub(super) sessions_collection: String,
    /// The archive's database (the configured one unless `archive.database` names another).
    pub(super) archive_database: String,
    pub(super) archive_collection: String,
    /// The connection string without its password, for "cannot reach" errors.
    address: String,
    /// The driver's server selection timeout: how long an operation waits for a server.
    selection_timeout: Duration,
    /// Set once the staging collection is known to exist (see [`MongoStore::ensure_staging`]).
    staging_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

/// An index as `listIndexes` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingIndex {
    pub name: String,
    pub keys: Document,
    pub unique: bool,
    pub sparse: bool,
    pub expire_after: Option<Duration>,
}

impl MongoStore {
    /// Builds a client; the driver connects lazily, so this fails only on a bad connection string.
    pub async fn connect(config: &Config) -> Result<Self> {
        let options = ClientOptions::parse(&config.mongodb_uri)
            .await
            .map_err(Error::mongo("connection string parsing"))?;
        Self::with_options(config, options)
    }

    /// Builds a client from options parsed elsewhere (from `mongodb_uri`, with e.g. a command
    /// monitor or other credentials set); the configuration supplies everything else.
    pub fn with_options(config: &Config, mut options: ClientOptions) -> Result<Self> {
        options.app_name = Some(format!("vcmetrics/{}", env!("CARGO_PKG_VERSION")));
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        let selection_timeout = options
            .server_selection_timeout
            .unwrap_or(Duration::from_secs(10));
        let client = Client::with_options(options).map_err(Error::mongo("client setup"))?;
        let database = client.database(&config.database);
        Ok(MongoStore {
            client,
            database,
            audit_collection: config.audit_collection.clone(),
            metrics_collection: config.metrics_collection.clone(),
            staging_collection: config.staging_collection.clone(),
            state_collection: config.state_collection.clone(),
            sessions_collection: config.sessions_collection.clone(),
            archive_database: config
                .archive
                .database
                .clone()
                .unwrap_or_else(|| config.database.clone()),
            archive_collection: config.archive.collection.clone(),
            address: config.redacted_uri(),
            selection_timeout,
            staging_ready: Default::default(),
        })
    }

    /// How a driver error of `operation` is reported: "cannot reach MongoDB" when no server
    /// answered (the driver's detail goes to the debug log), else the operation and the detail.
    pub(super) fn failed(
        &self,
        operation: &'static str,
    ) -> impl FnOnce(mongodb::error::Error) -> Error + '_ {
        move |source| {
            if !matches!(
                source.kind.as_ref(),
                mongodb::error::ErrorKind::ServerSelection { .. }
            ) {
                return Error::mongo(operation)(source);
            }
            tracing::debug!(operation, error = %crate::error::ServerError(source.clone()), "no MongoDB server answered");
            Error::Unreachable {
                address: self.address.clone(),
                cause: unreachable_cause(&source.to_string()),
                after: self.selection_timeout,
            }
        }
    }

    /// Closes the client's connections; call once at exit. The driver's graceful shutdown waits
    /// for every live cursor or session, indefinitely: seen once in about twenty runs of a
    /// command whose server never answered (a `recompute --dry-run` parked for minutes with no
    /// timer left). After [`SHUTDOWN_WAIT`] it closes at once instead: nothing is pending that
    /// the process still needs.
    pub async fn shutdown(self) {
        let graceful = self.client.clone().shutdown();
        if tokio::time::timeout(SHUTDOWN_WAIT, graceful).await.is_err() {
            tracing::debug!(
                "MongoDB client shutdown still waited after {SHUTDOWN_WAIT:?}; closed at once"
            );
            self.client.shutdown().immediate(true).await;
        }
    }

    pub async fn list_indexes(&self, collection: &str) -> Result<Vec<ExistingIndex>> {
        self.list_indexes_in(self.database.name(), collection).await
    }

    /// The indexes of a collection in `database` (the archive may live in another one).
    pub async fn list_indexes_in(
        &self,
        database: &str,
        collection: &str,
    ) -> Result<Vec<ExistingIndex>> {
        let cursor = match self
            .client
            .database(database)
            .collection::<Document>(collection)
            .list_indexes()
            .await
        {
            Ok(cursor) => cursor,
            // A collection that does not exist yet has no indexes (NamespaceNotFound).
            Err(e) if is_namespace_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("listIndexes")(e)),
        };
        let models: Vec<IndexModel> = cursor
            .try_collect()
            .await
            .map_err(self.failed("listIndexes"))?;
        Ok(models
            .into_iter()
            .map(|m| {
                let options = m.options.unwrap_or_default();
                ExistingIndex {
                    name: options.name.unwrap_or_default(),
                    keys: m.keys,
                    unique: options.unique.unwrap_or(false),
                    sparse: options.sparse.unwrap_or(false),
                    expire_after: options.expire_after,
                }
            })
            .collect())
    }

    /// The shard key of each sharded collection among `collections` of `database`, as
    /// `listCollections` reports it in `info.shardKey`. DocumentDB's distributed engine (0.108)
    /// reports it there; MongoDB does not, and refuses a unique index its shard key cannot hold
    /// at `createIndexes` instead (see `migrate`).
    pub async fn shard_keys(
        &self,
        database: &str,
        collections: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Document>> {
        let specifications: Vec<Document> = self
            .client
            .database(database)
            .run_cursor_command(doc! {
                "listCollections": 1,
                "filter": {"name": {"$in": collections}},
            })
            .await
            .map_err(self.failed("listCollections"))?
            .try_collect()
            .await
            .map_err(self.failed("listCollections"))?;
        Ok(specifications
            .into_iter()
            .filter_map(|spec| {
                let name = spec.get_str("name").ok()?.to_owned();
                let key = spec
                    .get_document("info")
                    .ok()?
                    .get_document("shardKey")
                    .ok()?;
                Some((name, key.clone()))
            })
            .collect())
    }

    /// Creates indexes of one collection in one `createIndexes` command (DocumentDB builds the
    /// indexes of one command together: about 2 s a command on 0.108, where one command per
    /// index took 2 s each).
    pub async fn create_indexes(&self, wanted: &[&WantedIndex]) -> Result<()> {
        let Some(first) = wanted.first() else {
            return Ok(());
        };
        let models = wanted.iter().map(|w| {
            let options = IndexOptions::builder()
                .name(w.name.clone())
                .unique(w.unique.then_some(true))
                .sparse(w.sparse.then_some(true))
                .expire_after(w.expire_after)
                .build();
            IndexModel::builder()
                .keys(w.keys.clone())
                .options(options)
                .build()
        });
        self.client
            .database(&first.database)
            .collection::<Document>(&first.collection)
            .create_indexes(models)
            .await
            .map(drop)
            .map_err(self.failed("createIndexes"))
    }

    /// Sets (or adds) the TTL of an existing single-field index with `collMod`.
    pub async fn set_ttl(
        &self,
        database: &str,
        collection: &str,
        index: &str,
        ttl: Duration,
    ) -> Result<()> {
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.client
            .database(database)
            .run_command(doc! {
                "collMod": collection,
                "index": {"name": index, "expireAfterSeconds": seconds},
            })
            .await
            .map(drop)
            .map_err(self.failed("collMod"))
    }

    /// Inserts audit events in one unordered `insertMany` (the generator's writes).
    pub async fn insert_audit_events(&self, events: Vec<Document>) -> Result<()> {
        self.database
            .collection::<Document>(&self.audit_collection)
            .insert_many(events)
            .ordered(false)
            .await
            .map(drop)
            .map_err(self.failed("insertMany (audit events)"))
    }

    pub fn audit_collection(&self) -> &str {
        &self.audit_collection
    }

    pub fn metrics_collection(&self) -> &str {
        &self.metrics_collection
    }
}

/// The server stopped the command at its `maxTimeMS`: MongoDB's MaxTimeMSExpired (50);
/// DocumentDB reports PostgreSQL's statement cancellation with a hint at maxTimeMS.
fn is_time_limit(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => {
            c.code == 50 || c.code_name == "MaxTimeMSExpired" || c.message.contains("maxTimeMS")
        }
        _ => false,
    }
}

/// The cause of a failed server selection in the words of an operator, from the driver's text.
fn unreachable_cause(detail: &str) -> &'static str {
    let detail = detail.to_ascii_lowercase();
    if detail.contains("connection refused") {
        "connection refused"
    } else if detail.contains("failed to lookup address")
        || detail.contains("name or service not known")
        || detail.contains("no such host")
    {
        "host name not found"
    } else if detail.contains("certificate") || detail.contains("tls") {
        "TLS handshake failed"
    } else if detail.contains("auth") {
        "authentication failed"
    } else if detail.contains("timed out") || detail.contains("timeout") {
        "no answer"
    } else {
        "no server answered"
    }
}

fn is_namespace_exists(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 48)
}

fn is_namespace_not_found(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 26)
}

/// A write command's `writeErrors` in an operator's words: how many, and the first one's code
/// name and message.
pub(super) fn write_errors_text(errors: &bson::Array) -> String {
    let first = errors
        .first()
        .and_then(Bson::as_document)
        .map_or_else(|| "no detail".to_owned(), reply_error_text);
    format!("{} statement(s) failed; the first: {first}", errors.len())
}

/// One error document of a reply (`{code, codeName, errmsg}`) as `CodeName: message`.
fn reply_error_text(error: &Document) -> String {
    let message = error.get_str("errmsg").unwrap_or("no message");
    match error.get_str("codeName") {
        Ok(name) if !name.is_empty() => format!("{name}: {message}"),
        _ => match error.get("code") {
            Some(code) => format!("error code {code}: {message}"),
            None => message.to_owned(),
        },
    }
}

pub(super) fn bson_date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}

/// The parts of a chunk's rollup.
impl MongoStore {
    /// Runs the seed upserts.
    async fn seed_windows(&self, command: &UpdateCommand) -> Result<()> {
        let database = self.client.database(&command.database);
        let mut update = command.to_command();
        // run_command sends the document as it is: carry the connection string's write concern
        // (e.g. w=majority) the way the driver's own write helpers would.
        if let Some(wc) = database.write_concern() {
            let wc = bson::to_document(wc).map_err(|e| Error::MongoWrite {
                operation: "update (seed windows)",
                message: format!("cannot encode the write concern: {e}"),
            })?;
            update.insert("writeConcern", wc);
        }
        let reply = database
            .run_command(update)
            .await
            .map_err(self.failed("update (seed windows)"))?;
        // A write command reports per-statement failures in its reply, not as a command error.
        if let Ok(errors) = reply.get_array("writeErrors") {
            if !errors.is_empty() {
                return Err(Error::MongoWrite {
                    operation: "update (seed windows)",
                    message: write_errors_text(errors),
                });
            }
        }
        if let Ok(wc) = reply.get_document("writeConcernError") {
            return Err(Error::MongoWrite {
                operation: "update (seed windows)",
                message: format!("write concern: {}", reply_error_text(wc)),
            });
        }
        Ok(())
    }

    /// Runs an aggregate: one ending in `$merge` returns no documents.
    async fn aggregate(&self, command: &AggregateCommand) -> Result<Vec<Document>> {
        let limit = command.time_limit;
        let failed = |source: mongodb::error::Error| {
            if is_time_limit(&source) {
                Error::TimeLimit {
                    operation: "aggregate",
                    limit,
                    source: crate::error::ServerError(source),
                }
            } else {
                self.failed("aggregate")(source)
            }
        };
        let cursor = self
            .client
            .database(&command.database)
            .collection::<Document>(&command.collection)
            .aggregate(command.pipeline.clone())
            .allow_disk_use(true)
            .max_time(limit)
            .await
            .map_err(failed)?;
        cursor.try_collect().await.map_err(failed)
    }

    /// Runs a `$count` aggregate: its `n`, zero when it returns nothing.
    async fn written_count(&self, command: &AggregateCommand) -> Result<u64> {
        let counted = self.aggregate(command).await?;
        match counted.first().map(|d| d.get("n")) {
            None => Ok(0),
            Some(Some(n)) => match crate::metrics_document::number(n) {
                Some(n) if n >= 0.0 => Ok(n as u64),
                _ => Err(self.unexpected_count(n)),
            },
            Some(None) => Err(self.unexpected_count(&Bson::Null)),
        }
    }

    fn unexpected_count(&self, n: &Bson) -> Error {
        Error::MongoWrite {
            operation: "aggregate (count written)",
            message: format!("a count that is no number: {n:?}"),
        }
    }

    /// Runs a delete command.
    async fn delete(&self, command: &DeleteCommand) -> Result<()> {
        self.client
            .database(&command.database)
            .run_command(command.to_command())
            .await
            .map_err(self.failed("delete (staged documents)"))?;
        Ok(())
    }

    /// Removes a chunk's staged documents (and copied archive events). They are scratch work: a
    /// failed cleanup leaves them to the staging collection's TTL index and takes nothing from
    /// the merged metrics.
    async fn clean_up(&self, chunk: &Chunk) {
        if let Err(e) = self.delete(&chunk.commands.cleanup).await {
            tracing::warn!(error = %crate::error::Chain(&e), "could not delete a chunk's staged documents");
        }
    }

    /// Creates the staging collection unless it exists. Two `$merge`s creating the same
    /// collection at once run one after the other on DocumentDB 0.108 (measured), so a chunk's
    /// scans would no longer overlap the first time.
    async fn ensure_staging(&self) -> Result<()> {
        self.staging_ready
            .get_or_try_init(|| async {
                match self
                    .database
                    .create_collection(&self.staging_collection)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if is_namespace_exists(&e) => Ok(()),
                    Err(e) => Err(self.failed("create (staging collection)")(e)),
                }
            })
            .await
            .map(|_| ())
    }
}

impl RollupStore for MongoStore {
    async fn roll_up(&self, chunk: &Chunk) -> Result<()> {
        let c = &chunk.commands;
        self.ensure_staging().await?;
        let started = std::time::Instant::now();
        if let Some(bring) = &c.bring {
            if let Err(e) = self.aggregate(bring).await {
                self.clean_up(chunk).await;
                return Err(e);
            }
        }
        self.seed_windows(&c.seed).await?;
        let seeded = started.elapsed();
        // The three scans run to their end, even when one fails, so that the cleanup below comes
        // after every staged write.
        let timed = |command| async move {
            let result = self.aggregate(command).await;
            (result, started.elapsed())
        };
        let ((counts, counts_at), (users, users_at), (values, values_at)) =
            tokio::join!(timed(&c.counts), timed(&c.users), timed(&c.values));
        let finished = match (counts, users, values) {
            (Ok(_), Ok(_), Ok(_)) => self.aggregate(&c.finish).await.map(|_| ()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        self.clean_up(chunk).await;
        tracing::debug!(period = %chunk.period, windows = chunk.windows.len(),
            seeded_ms = seeded.as_millis(), counts_ms = counts_at.as_millis(),
            users_ms = users_at.as_millis(), values_ms = values_at.as_millis(),
            total_ms = started.elapsed().as_millis(), "chunk rolled up");
        finished
    }

    async fn compute(&self, chunk: &Chunk) -> Result<Vec<Document>> {
        let Some(bring) = &chunk.commands.bring else {
            return self.aggregate(&chunk.commands.preview).await;
        };
        // An archive in another database: its copy in the staging collection is read, then
        // removed.
        self.ensure_staging().await?;
        let computed = match self.aggregate(bring).await {
            Ok(_) => self.aggregate(&chunk.commands.preview).await,
            Err(e) => Err(e),
        };
        self.clean_up(chunk).await;
        computed
    }
}

impl TickStore for MongoStore {
    async fn keep(&self, keep: &Keep) -> Result<Kept> {
        let started = std::time::Instant::now();
        // The users are the longest part and the engine's cores are few, so the rest goes one
        // command at a time beside them: the slices (a run keeps one or two), each slice's two
        // scans one after the other, then the buckets they touched. The users: the kept slices'
        // ranges counted again, beside this run's read (counted first: whatever the counts saw,
        // the merge reads) and its merge; then the ranges to merge (never read, or whose count
        // changed). Never two merges into the user sets at once: two upserts of one new
        // document race to a duplicate key.
        let slices = async {
            for slice in &keep.slices {
                self.aggregate(&slice.counts).await?;
                self.aggregate(&slice.values).await?;
            }
            let kept_at = started.elapsed();
            Ok::<_, Error>((kept_at, self.aggregate(&keep.touched).await?))
        };
        let checks = async {
            let mut to_merge = Vec::new();
            for check in &keep.checks {
                if let Some((events, count)) = &check.check {
                    if self.written_count(count).await? == *events {
                        continue;
                    }
                }
                to_merge.push(check);
            }
            Ok::<_, Error>(to_merge)
        };
        let ahead = async {
            let mut reads = keep.pending.clone();
            if let Some(ahead) = &keep.ahead {
                for (from, to, count) in &ahead.ranges {
                    reads.push(UsersRead {
                        from: *from,
                        to: *to,
                        events: self.written_count(count).await?,
                    });
                }
                self.aggregate(&ahead.merge).await?;
            }
            Ok::<_, Error>(reads)
        };
        let users = async {
            let (to_merge, reads) = tokio::join!(checks, ahead);
            let (to_merge, reads) = (to_merge?, reads?);
            let mut merged_again = 0;
            for check in to_merge {
                merged_again += usize::from(check.check.is_some());
                self.aggregate(&check.merge).await?;
            }
            Ok::<_, Error>((started.elapsed(), merged_again, reads))
        };
        let (slices, users) = tokio::join!(slices, users);
        let ((slices_at, touched), (users_at, merged_again, reads)) = (slices?, users?);
        tracing::debug!(
            slices = keep.slices.len(),
            slices_ms = slices_at.as_millis(),
            users_ms = users_at.as_millis(),
            merged_again,
            total_ms = started.elapsed().as_millis(),
            "writes kept"
        );
        let touched = touched
            .iter()
            .map(|d| match d.get("_id") {
                Some(Bson::DateTime(t)) => Ok(t.to_chrono()),
                other => Err(Error::MongoWrite {
                    operation: "aggregate (kept buckets)",
                    message: format!("a bucket that is no date: {other:?}"),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Kept {
            touched,
            reads,
            merged_again,
        })
    }

    async fn finish_windows(&self, finish: &Finish) -> Result<()> {
        let started = std::time::Instant::now();
        self.seed_windows(&finish.commands.seed).await?;
        let seeded = started.elapsed();
        self.aggregate(&finish.commands.finish).await?;
        tracing::debug!(
            windows = finish.windows.len(),
            recent = finish.recent.len(),
            seeded_ms = seeded.as_millis(),
            total_ms = started.elapsed().as_millis(),
            "windows written from what is kept"
        );
        Ok(())
    }
}

impl StoredMetrics for MongoStore {
    async fn stored_windows(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
    ) -> Result<Vec<Document>> {
        let dates: Vec<Bson> = starts
            .iter()
            .map(|t| Bson::DateTime(bson::DateTime::from_chrono(*t)))
            .collect();
        let cursor = self
            .database
            .collection::<Document>(&self.metrics_collection)
            .find(doc! {"period": period.as_str(), "date": {"$in": dates}})
            .projection(doc! {"_id": 0})
            .await
            .map_err(self.failed("find (metrics)"))?;
        cursor
            .try_collect()
            .await
            .map_err(self.failed("find (metrics)"))
    }
}

impl LateEventStore for MongoStore {
    async fn scan_late_events(&self, query: &LateScanQuery) -> Result<LateScanResult> {
        let docs = self.aggregate(&query.command).await?;
        LateScanResult::from_documents(&docs).map_err(|e| Error::MongoWrite {
            operation: "aggregate (late events)",
            message: e.to_string(),
        })
    }
}

impl RetentionStore for MongoStore {
    async fn audit_ttl(&self) -> Result<Option<Duration>> {
        let indexes = self.list_indexes(&self.audit_collection).await?;
        Ok(indexes
            .iter()
            .filter(|i| i.keys.len() == 1 && i.keys.contains_key("timestamp"))
            .find_map(|i| i.expire_after))
    }

    async fn archive_state(&self) -> Result<ArchiveState> {
        self.read_archive_state().await
    }
}

impl ServerStore for MongoStore {
    async fn ping(&self) -> Result<()> {
        self.database
            .run_command(doc! {"ping": 1})
            .await
            .map(drop)
            .map_err(self.failed("ping"))
    }

    async fn absent_indexes(&self, wanted: &[WantedIndex]) -> Result<Vec<WantedIndex>> {
        let mut existing = std::collections::BTreeMap::new();
        let mut absent = Vec::new();
        for w in wanted {
            let namespace = (w.database.as_str(), w.collection.as_str());
            let indexes = match existing.entry(namespace) {
                std::collections::btree_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(self.list_indexes_in(&w.database, &w.collection).await?)
                }
            };
            if super::indexes::is_absent(w, indexes) {
                absent.push(w.clone());
            }
        }
        Ok(absent)
    }
}

impl MarkStore for MongoStore {
    async fn watermark(&self, period: Period) -> Result<Option<DateTime<Utc>>> {
        let state = self
            .database
            .collection::<Document>(&self.state_collection)
            .find_one(doc! {"_id": watermark_id(period)})
            .await
            .map_err(self.failed("find (watermark)"))?;
        match state {
            None => Ok(None),
            Some(d) => match d.get("watermark") {
                Some(Bson::DateTime(t)) => Ok(Some(t.to_chrono())),
                // Starting over from `start_from` would silently skip or redo history.
                other => Err(Error::MongoWrite {
                    operation: "find (watermark)",
                    message: format!("the {period} watermark document has no date `watermark` ({other:?}); fix or delete it"),
                }),
            },
        }
    }

    async fn advance_watermark(
        &self,
        period: Period,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.database
            .collection::<Document>(&self.state_collection)
            .update_one(
                doc! {"_id": watermark_id(period)},
                doc! {
                    "$max": {"watermark": bson_date(to)},
                    "$set": {"period": period.as_str(), "updatedAt": bson_date(now)},
                },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(self.failed("update (watermark)"))
    }

    async fn late_mark(&self, period: Period) -> Result<Option<ObjectId>> {
        let state = self
            .database
            .collection::<Document>(&self.state_collection)
            .find_one(doc! {"_id": late_mark_id(period)})
            .await
            .map_err(self.failed("find (late-event mark)"))?;
        match state {
            None => Ok(None),
            Some(d) => match d.get("since") {
                Some(Bson::ObjectId(id)) => Ok(Some(*id)),
                // Starting over would skip the events written since the mark.
                other => Err(Error::MongoWrite {
                    operation: "find (late-event mark)",
                    message: format!("the {period} late-event mark has no ObjectId `since` ({other:?}); fix or delete it"),
                }),
            },
        }
    }

    async fn advance_late_mark(
        &self,
        period: Period,
        to: ObjectId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.database
            .collection::<Document>(&self.state_collection)
            .update_one(
                doc! {"_id": late_mark_id(period)},
                doc! {
                    "$max": {"since": to},
                    "$set": {"period": period.as_str(), "updatedAt": bson_date(now)},
                },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(self.failed("update (late-event mark)"))
    }

    async fn tick_mark(&self, period: Period) -> Result<Option<TickMark>> {
        let state = self
            .database
            .collection::<Document>(&self.state_collection)
            .find_one(doc! {"_id": tick_mark_id(period)})
            .await
            .map_err(self.failed("find (incremental mark)"))?;
        let Some(d) = state else {
            return Ok(None);
        };
        let bad = |what: String| Error::MongoWrite {
            operation: "find (incremental mark)",
            // Starting over would leave the kept windows without the writes since the mark.
            message: format!("the {period} incremental mark {what}; fix or delete it"),
        };
        let (Some(Bson::DateTime(origin)), Some(Bson::DateTime(since))) =
            (d.get("origin"), d.get("since"))
        else {
            return Err(bad(format!(
                "has no dates `origin` and `since` ({:?}, {:?})",
                d.get("origin"),
                d.get("since")
            )));
        };
        let reads = match d.get("reads") {
            None => Vec::new(),
            Some(Bson::Array(reads)) => reads
                .iter()
                .map(|r| {
                    let r = r.as_document();
                    let date = |k: &str| match r.and_then(|r| r.get(k)) {
                        Some(Bson::DateTime(t)) => Some(t.to_chrono()),
                        _ => None,
                    };
                    let events = r.and_then(|r| crate::metrics_document::number(r.get("events")?));
                    match (date("from"), date("to"), events) {
                        (Some(from), Some(to), Some(events)) if events >= 0.0 => Ok(UsersRead {
                            from,
                            to,
                            events: events as u64,
                        }),
                        _ => Err(bad(format!(
                            "has a read that is not {{from, to, events}}: {r:?}"
                        ))),
                    }
                })
                .collect::<Result<_>>()?,
            Some(other) => return Err(bad(format!("has `reads` that is no array ({other:?})"))),
        };
        Ok(Some(TickMark {
            origin: origin.to_chrono(),
            since: since.to_chrono(),
            reads,
        }))
    }

    async fn advance_tick_mark(
        &self,
        period: Period,
        mark: &TickMark,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let reads: Vec<Bson> = mark
            .reads
            .iter()
            .map(|r| {
                Bson::Document(doc! {"from": bson_date(r.from), "to": bson_date(r.to),
                "events": i64::try_from(r.events).unwrap_or(i64::MAX)})
            })
            .collect();
        self.database
            .collection::<Document>(&self.state_collection)
            .update_one(
                doc! {"_id": tick_mark_id(period)},
                doc! {
                    "$max": {"since": bson_date(mark.since)},
                    "$min": {"origin": bson_date(mark.origin)},
                    "$set": {"period": period.as_str(), "reads": reads, "updatedAt": bson_date(now)},
                },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(self.failed("update (incremental mark)"))
    }

    async fn note_rewrite(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
        until: DateTime<Utc>,
    ) -> Result<()> {
        let starts: Vec<Bson> = starts.iter().map(|t| bson_date(*t)).collect();
        let state = self.database.collection::<Document>(&self.state_collection);
        let note = || {
            state
                .update_one(
                    doc! {"_id": rewrite_id(period)},
                    doc! {
                        "$addToSet": {"windows": {"$each": &starts}},
                        "$max": {"until": bson_date(until)},
                        "$set": {"period": period.as_str()},
                    },
                )
                .upsert(true)
        };
        // The late-event scan and the finish may note at once: when both upsert the document
        // first, one loses with a duplicate key (MongoDB retries that on the server since 4.2,
        // SERVER-37124; DocumentDB need not) and finds the document there on a second try.
        match note().await {
            Err(e) if is_duplicate_key(&e) => note().await,
            done => done,
        }
        .map(drop)
        .map_err(self.failed("update (rewrite)"))
    }

    async fn pending_rewrite(&self, period: Period) -> Result<Option<PendingRewrite>> {
        let state = self
            .database
            .collection::<Document>(&self.state_collection)
            .find_one(doc! {"_id": rewrite_id(period)})
            .await
            .map_err(self.failed("find (rewrite)"))?;
        let Some(state) = state else {
            return Ok(None);
        };
        let malformed = |what: &str| Error::MongoWrite {
            operation: "find (rewrite)",
            message: format!("the {period} rewrite document has {what}; fix or delete it"),
        };
        let until = match state.get("until") {
            Some(Bson::DateTime(t)) => t.to_chrono(),
            _ => return Err(malformed("no date `until`")),
        };
        let mut starts = Vec::new();
        for start in state
            .get_array("windows")
            .map_err(|_| malformed("no array `windows`"))?
        {
            match start {
                Bson::DateTime(t) => starts.push(t.to_chrono()),
                _ => return Err(malformed("a `windows` entry that is not a date")),
            }
        }
        if starts.is_empty() {
            return Ok(None);
        }
        starts.sort();
        Ok(Some(PendingRewrite { until, starts }))
    }

    async fn clear_rewrite(&self, period: Period, starts: &[DateTime<Utc>]) -> Result<()> {
        let starts: Vec<Bson> = starts.iter().map(|t| bson_date(*t)).collect();
        self.database
            .collection::<Document>(&self.state_collection)
            .update_one(
                doc! {"_id": rewrite_id(period)},
                doc! {"$pull": {"windows": {"$in": starts}}},
            )
            .await
            .map(drop)
            .map_err(self.failed("update (rewrite)"))
    }
}

impl LeaseStore for MongoStore {
    async fn try_lease(
        &self,
        holder: &LeaseHolder,
        now: DateTime<Utc>,
        ttl: Duration,
        settle: Duration,
    ) -> Result<Option<HeldLease>> {
        // lease_ttl is at most an hour (config validation); saturate rather than overflow anyway.
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let leases = self.database.collection::<Document>(&self.state_collection);
        let extend = doc! {
            "holder": &holder.name, "incarnation": &holder.incarnation,
            "expiresAt": bson_date(expires), "renewedAt": bson_date(now), "released": false,
        };
        // Renewing: this incarnation's unexpired lease keeps its epoch. The expiry only moves
        // forward: a renewal that reaches the server late cannot shorten a later one.
        let renewed = leases
            .find_one_and_update(
                doc! {
                    "_id": LEASE_ID, "holder": &holder.name, "incarnation": &holder.incarnation,
                    "expiresAt": {"$gt": bson_date(now)},
                },
                doc! {
                    "$set": {"renewedAt": bson_date(now)},
                    "$max": {"expiresAt": bson_date(expires)},
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(self.failed("findAndModify (lease)"))?;
        if let Some(lease) = renewed {
            return Ok(Some(held_lease(&lease)));
        }
        // Taking it over: it expired without being given up, so its holder may still have a
        // write in flight, which lands at the latest `settle` from now. The epoch moves on.
        let settles = chrono::Duration::from_std(settle)
            .ok()
            .and_then(|settle| now.checked_add_signed(settle))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let taken_over = leases
            .find_one_and_update(
                doc! {"_id": LEASE_ID, "expiresAt": {"$lte": bson_date(now)}, "released": {"$ne": true}},
                doc! {
                    "$set": extend.clone(),
                    "$inc": {"epoch": 1_i64},
                    "$max": {"settledAt": bson_date(settles)},
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(self.failed("findAndModify (lease)"))?;
        if let Some(lease) = taken_over {
            return Ok(Some(held_lease(&lease)));
        }
        // Taking it: never taken, or given up (its holder said when its last write landed).
        let taken = leases
            .find_one_and_update(
                doc! {"_id": LEASE_ID, "expiresAt": {"$lte": bson_date(now)}, "released": true},
                doc! {
                    "$set": extend,
                    "$inc": {"epoch": 1_i64},
                    "$max": {"settledAt": bson_date(now)},
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(Some(lease)) => Ok(Some(held_lease(&lease))),
            Ok(None) => Ok(None),
            // Held by someone else (or taken and expired since the first try): the filter
            // missed and the upsert hit the existing _id.
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(self.failed("findAndModify (lease)")(e)),
        }
    }

    async fn holds_lease(&self, holder: &str, epoch: i64) -> Result<bool> {
        let found = self
            .database
            .collection::<Document>(&self.state_collection)
            .find_one(doc! {"_id": LEASE_ID, "holder": holder})
            .await
            .map_err(self.failed("find (lease)"))?;
        Ok(found.is_some_and(|lease| lease_epoch(&lease) == epoch))
    }

    async fn release_lease(&self, holder: &LeaseHolder, settled_at: DateTime<Utc>) -> Result<()> {
        self.database
            .collection::<Document>(&self.state_collection)
            .update_one(
                doc! {"_id": LEASE_ID, "holder": &holder.name, "incarnation": &holder.incarnation},
                doc! {
                    "$set": {"expiresAt": bson_date(DateTime::<Utc>::UNIX_EPOCH), "released": true},
                    "$max": {"settledAt": bson_date(settled_at)},
                },
            )
            .await
            .map(drop)
            .map_err(self.failed("update (lease)"))
    }
}

impl SessionStore for MongoStore {
    async fn session_gauges(&self, queries: &GaugeQueries) -> Result<SessionGauges> {
        self.read_session_gauges(queries).await
    }
}

/// The lease as its document says: its epoch and when earlier writes have landed (a document
/// written before either existed: epoch 0, settled).
fn held_lease(lease: &Document) -> HeldLease {
    HeldLease {
        epoch: lease_epoch(lease),
        settled_at: match lease.get("settledAt") {
            Some(Bson::DateTime(t)) => t.to_chrono(),
            _ => DateTime::<Utc>::MIN_UTC,
        },
    }
}

/// A lease document's epoch; 0 for one written before epochs existed.
fn lease_epoch(lease: &Document) -> i64 {
    match lease.get("epoch") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    }
}

pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}
