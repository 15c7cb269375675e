//! `vcmetrics migrate`: create the indexes of the audit log, the metrics, the staging and the
//! sessions collections; with `--data <name>`, run a named data migration of the sessions.

use bson::Bson;
use chrono::Utc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sessions::migration::{
    confirmed_without_link, confirmed_without_link_nor_object_id, video_call_fields,
    without_video_fields, Changes, Record, ADD_VIDEO_CALL_FIELDS,
};
use crate::store::indexes::{
    plan, unique_holds_when_sharded, wanted_indexes, IndexAction, WantedIndex,
};
use crate::store::MongoStore;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Change an existing audit-log TTL (or add one to a plain timestamp index) to `audit_ttl`.
    /// Without it a differing TTL is reported and migrate exits 4.
    #[arg(long)]
    pub update_ttl: bool,
    /// Run the named data migration of the platform's sessions instead of creating indexes. It
    /// writes to the application's data: look first with --dry-run.
    #[arg(long, value_name = "NAME", value_parser = [ADD_VIDEO_CALL_FIELDS])]
    pub data: Option<String>,
    /// With --data: print how many documents each step would change, and write nothing.
    #[arg(long, requires = "data")]
    pub dry_run: bool,
    /// With --data: run a migration that is recorded as applied again.
    #[arg(long, requires = "data")]
    pub force: bool,
    /// With --data: sessions per batch (each batch is a handful of commands).
    #[arg(long, requires = "data", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let store = MongoStore::connect(config).await?;
    let result = match &args.data {
        None => migrate(&store, config, &args, &mut |line| println!("{line}")).await,
        Some(_) => migrate_data(&store, &args).await,
    };
    store.shutdown().await;
    result
}

/// Creates what is missing and reports the rest, on a store the caller connected: one line per
/// index to `say` (`created`, `exists`, `updated`, `differs`, `conflict`).
pub async fn migrate(
    store: &MongoStore,
    config: &Config,
    args: &Args,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<()> {
    let wanted = wanted_indexes(config);
    let mut refusals = Vec::new();
    let mut to_create = std::collections::BTreeMap::<_, Vec<_>>::new();
    let mut existing_by_collection = std::collections::BTreeMap::new();
    for w in &wanted {
        let namespace = (w.database.clone(), w.collection.clone());
        if let std::collections::btree_map::Entry::Vacant(entry) =
            existing_by_collection.entry(namespace)
        {
            entry.insert(store.list_indexes_in(&w.database, &w.collection).await?);
        }
    }
    let shard_keys = shard_keys_of_unique(store, &wanted).await?;
    let mut unshardable = Vec::new();
    for w in &wanted {
        let place = format!("{}.{}", w.collection, w.name);
        if let Some(shard_key) = shard_keys.get(&(w.database.clone(), w.collection.clone())) {
            if w.unique && !unique_holds_when_sharded(&w.keys, shard_key) {
                say(format!(
                    "conflict {place}: {} is sharded on {shard_key}",
                    w.collection
                ));
                unshardable.push(must_stay_unsharded(
                    w,
                    &format!(
                        "the collection is sharded on {shard_key}, and a unique index holds \
                         across shards only when it starts with the shard key"
                    ),
                ));
                continue;
            }
        }
        let existing = existing_by_collection
            .get(&(w.database.clone(), w.collection.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        match plan(w, existing) {
            IndexAction::Create => to_create
                .entry((w.database.clone(), w.collection.clone()))
                .or_insert_with(Vec::new)
                .push(w),
            IndexAction::Exists { name } => {
                say(format!("exists   {}.{name} {}", w.collection, w.keys))
            }
            IndexAction::TtlDiffers { name, existing } => {
                let wanted_secs = w.expire_after.map_or(0, |d| d.as_secs());
                let existing_text = existing.map_or_else(
                    || "no TTL".to_owned(),
                    |d| format!("expireAfterSeconds {}", d.as_secs()),
                );
                if args.update_ttl {
                    if let Some(ttl) = w.expire_after {
                        store
                            .set_ttl(&w.database, &w.collection, &name, ttl)
                            .await?;
                    }
                    say(format!(
                        "updated  {}.{name}: {existing_text} -> expireAfterSeconds {wanted_secs}",
                        w.collection
                    ));
                } else {
                    say(format!("differs  {}.{name}: {existing_text}, config wants expireAfterSeconds {wanted_secs}", w.collection));
                    refusals.push(format!(
                        "{}.{name} has {existing_text} but {} is {wanted_secs}s; set {} to match, or pass --update-ttl to change it",
                        w.collection, w.ttl_setting, w.ttl_setting
                    ));
                }
            }
            IndexAction::OptionsDiffer {
                name,
                existing,
                wanted,
            } => {
                say(format!(
                    "differs  {}.{name}: {existing}, vcmetrics wants {wanted}",
                    w.collection
                ));
                refusals.push(format!(
                    "{}.{name} has {existing} but vcmetrics wants {wanted}; it is never replaced: \
                     drop it and rerun migrate if the platform agrees",
                    w.collection
                ));
            }
            IndexAction::Conflict { reason } => {
                say(format!("conflict {place}: {reason}"));
                refusals.push(format!("{place}: {reason}"));
            }
        }
    }
    for wanted in to_create.values() {
        let created = match store.create_indexes(wanted).await {
            Ok(()) => wanted.clone(),
            Err(e) => match refused_unique(wanted, e) {
                // The rest of the collection's indexes are still created.
                Ok((unique, others)) => {
                    store.create_indexes(&others).await?;
                    unshardable.push(unique);
                    others
                }
                Err(e) => return Err(e),
            },
        };
        for w in created {
            say(format!("created  {}.{} {}", w.collection, w.name, w.keys));
        }
    }
    if !unshardable.is_empty() {
        return Err(Error::Setup(unshardable.join("; ")));
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(refusals.join("; ")))
    }
}

/// The shard keys of the sharded collections that get a unique index, by (database,
/// collection); empty where the server reports none (MongoDB, or nothing sharded).
async fn shard_keys_of_unique(
    store: &MongoStore,
    wanted: &[WantedIndex],
) -> Result<std::collections::BTreeMap<(String, String), bson::Document>> {
    let mut by_database = std::collections::BTreeMap::<&str, Vec<&str>>::new();
    for w in wanted.iter().filter(|w| w.unique) {
        by_database
            .entry(&w.database)
            .or_default()
            .push(&w.collection);
    }
    let mut keys = std::collections::BTreeMap::new();
    for (database, collections) in by_database {
        for (collection, key) in store.shard_keys(database, &collections).await? {
            keys.insert((database.to_owned(), collection), key);
        }
    }
    Ok(keys)
}

/// Why `unique`'s collection must stay unsharded, given what stands in the way (`cause`).
fn must_stay_unsharded(unique: &WantedIndex, cause: &str) -> String {
    let why = if unique.keys == bson::doc! {"period": 1, "date": 1} {
        "every run's $merge matches windows on {period, date}, which needs this unique index"
    } else {
        "the platform's schema declares it unique"
    };
    format!(
        "the unique index {}.{} {} cannot be kept ({cause}): keep {} unsharded ({why}, and a \
         sharded collection cannot have it here; docs/scaling.md)",
        unique.collection, unique.name, unique.keys, unique.collection
    )
}

/// When the server refused a batch that holds a unique index (MongoDB refuses those its shard
/// key cannot hold), the reason to give and the batch's other indexes.
fn refused_unique<'a>(
    batch: &[&'a WantedIndex],
    error: Error,
) -> Result<(String, Vec<&'a WantedIndex>)> {
    let Some(unique) = batch.iter().find(|w| w.unique) else {
        return Err(error);
    };
    let server = match &error {
        Error::Mongo { source, .. } => source.to_string(),
        _ => return Err(error),
    };
    let reason = must_stay_unsharded(unique, &format!("the server refused it: {server}"));
    let others = batch.iter().filter(|w| !w.unique).copied().collect();
    Ok((reason, others))
}

/// `--data add-video-call-fields`: look (`--dry-run`), or run it unless it is recorded as applied.
pub async fn migrate_data(store: &MongoStore, args: &Args) -> Result<()> {
    const NAME: &str = ADD_VIDEO_CALL_FIELDS;
    if args.dry_run {
        let changes = preview(store).await?;
        println!(
            "{NAME} (dry run: nothing written)\n{}",
            changes.describe(true)
        );
        return Ok(());
    }
    match store.migration_record(NAME).await? {
        Record::Applied { at, version } if !args.force => {
            println!(
                "{NAME}: already applied at {} by vcmetrics {version}; nothing done (--force runs it again)",
                at.to_rfc3339()
            );
            return Ok(());
        }
        Record::Started { at, version } => println!(
            "{NAME}: a run started at {} by vcmetrics {version} did not finish; going on from where it stopped",
            at.to_rfc3339()
        ),
        _ => {}
    }
    let now = Utc::now();
    store.record_migration_started(NAME, now).await?;
    let changes = apply(store, now, args.batch_size as usize).await?;
    store
        .record_migration_applied(NAME, Utc::now(), &changes)
        .await?;
    println!("{NAME}: applied\n{}", changes.describe(false));
    Ok(())
}

/// What the migration would change now.
async fn preview(store: &MongoStore) -> Result<Changes> {
    let mut changes = Changes::default();
    for (field, _) in video_call_fields(Utc::now()) {
        let mut filter = without_video_fields();
        filter.insert(field, bson::doc! {"$exists": false});
        changes
            .fields
            .insert(field, store.count_sessions(filter).await?);
    }
    changes.links = store.count_sessions(confirmed_without_link()).await?;
    changes.links_impossible = store
        .count_sessions(confirmed_without_link_nor_object_id())
        .await?;
    Ok(changes)
}

/// Both steps, batch by batch. A batch whose first `_id` comes back unchanged made no progress
/// (something refuses the write): an error, never a loop.
async fn apply(store: &MongoStore, now: chrono::DateTime<Utc>, batch: usize) -> Result<Changes> {
    let stuck = |step: &str, id: &Bson| {
        Error::MongoWrite {
        operation: "update (sessions)",
        message: format!("{step}: session {id} is still unchanged after its batch was written; nothing more is done"),
    }
    };
    let mut changes = Changes::default();
    let mut previous: Option<Bson> = None;
    loop {
        let ids = store.session_ids(without_video_fields(), batch).await?;
        let Some(first) = ids.first().cloned() else {
            break;
        };
        if previous.as_ref() == Some(&first) {
            return Err(stuck("step 1", &first));
        }
        for (field, value) in video_call_fields(now) {
            let set = store.set_missing_field(&ids, field, value).await?;
            *changes.fields.entry(field).or_default() += set;
        }
        previous = Some(first);
    }
    let mut previous: Option<Bson> = None;
    loop {
        let ids = store.session_ids(confirmed_without_link(), batch).await?;
        let Some(first) = ids.first().cloned() else {
            break;
        };
        if previous.as_ref() == Some(&first) {
            return Err(stuck("step 2", &first));
        }
        changes.links += store.set_meeting_links(&ids, now).await?;
        previous = Some(first);
    }
    changes.links_impossible = store
        .count_sessions(confirmed_without_link_nor_object_id())
        .await?;
    Ok(changes)
}
