//! `vcmetrics migrate`: create the indexes of the audit log, the metrics, the staging and the
//! sessions collections.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::indexes::{plan, wanted_indexes, IndexAction};
use crate::store::MongoStore;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Change an existing audit-log TTL (or add one to a plain timestamp index) to `audit_ttl`.
    /// Without it a differing TTL is reported and migrate exits 4.
    #[arg(long)]
    pub update_ttl: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let store = MongoStore::connect(config).await?;
    let result = migrate(&store, config, &args).await;
    store.shutdown().await;
    result
}

/// Creates what is missing and reports the rest, on a store the caller connected.
pub async fn migrate(store: &MongoStore, config: &Config, args: &Args) -> Result<()> {
    let wanted = wanted_indexes(config);
    let mut refusals = Vec::new();
    let mut existing_by_collection = std::collections::BTreeMap::new();
    for w in &wanted {
        if !existing_by_collection.contains_key(&w.collection) {
            let existing = store.list_indexes(&w.collection).await?;
            existing_by_collection.insert(w.collection.clone(), existing);
        }
    }
    for w in &wanted {
        let existing = existing_by_collection
            .get(&w.collection)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let place = format!("{}.{}", w.collection, w.name);
        match plan(w, existing) {
            IndexAction::Create => {
                store.create_index(w).await?;
                println!("created  {place} {}", w.keys);
            }
            IndexAction::Exists { name } => println!("exists   {}.{name} {}", w.collection, w.keys),
            IndexAction::TtlDiffers { name, existing } => {
                let wanted_secs = w.expire_after.map_or(0, |d| d.as_secs());
                let existing_text = existing.map_or_else(
                    || "no TTL".to_owned(),
                    |d| format!("expireAfterSeconds {}", d.as_secs()),
                );
                if args.update_ttl {
                    if let Some(ttl) = w.expire_after {
                        store.set_ttl(&w.collection, &name, ttl).await?;
                    }
                    println!(
                        "updated  {}.{name}: {existing_text} -> expireAfterSeconds {wanted_secs}",
                        w.collection
                    );
                } else {
                    println!("differs  {}.{name}: {existing_text}, config wants expireAfterSeconds {wanted_secs}", w.collection);
                    refusals.push(format!(
                        "{}.{name} has {existing_text} but audit_ttl is {wanted_secs}s; set audit_ttl to match, or pass --update-ttl to change it",
                        w.collection
                    ));
                }
            }
            IndexAction::OptionsDiffer {
                name,
                existing,
                wanted,
            } => {
                println!(
                    "differs  {}.{name}: {existing}, vcmetrics wants {wanted}",
                    w.collection
                );
                refusals.push(format!(
                    "{}.{name} has {existing} but vcmetrics wants {wanted}; it is never replaced: \
                     drop it and rerun migrate if the platform agrees",
                    w.collection
                ));
            }
            IndexAction::Conflict { reason } => {
                println!("conflict {place}: {reason}");
                refusals.push(format!("{place}: {reason}"));
            }
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(refusals.join("; ")))
    }
}
