//! `vcmetrics check sessions`: the schema's validation rules for sessions, counted over a range of
//! `sessionDate`s, with the first offending session ids (ids only). Exit 3 when a rule is broken.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sessions::rules::{rule_count_pipeline, SessionRule};
use crate::store::MongoStore;

use super::parse_instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Sessions whose sessionDate is in [--from, --to): callDuration against the call's start
    /// and end, and the meetingLink format.
    Sessions {
        /// Start of the range (sessionDate): RFC 3339, a date or local date-time in the
        /// configured time zone, `now`, or `now-<duration>` (now-30d).
        #[arg(long)]
        from: String,
        /// End of the range (exclusive), same forms as --from.
        #[arg(long)]
        to: String,
        /// At most this many offending session ids per rule.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the counting aggregate of each rule (a JSON array of {rule, database,
        /// command}) instead of running them; needs no server.
        #[arg(long)]
        print: bool,
    },
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let What::Sessions {
        from,
        to,
        limit,
        print,
    } = args.what;
    let tz = config.calendar.time_zone();
    let (from, to) = (
        parse_instant("--from", &from, tz)?,
        parse_instant("--to", &to, tz)?,
    );
    if from >= to {
        return Err(Error::Usage(format!(
            "--from ({}) must be before --to ({})",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    if print {
        let commands: Vec<bson::Bson> = SessionRule::ALL
            .iter()
            .map(|rule| {
                bson::Bson::Document(bson::doc! {
                    "rule": rule.as_str(),
                    "database": &config.database,
                    "command": {
                        "aggregate": &config.sessions_collection,
                        "pipeline": rule_count_pipeline(*rule, from, to),
                        "cursor": {},
                    },
                })
            })
            .collect();
        println!("{:#}", bson::Bson::Array(commands).into_relaxed_extjson());
        return Ok(());
    }
    let store = MongoStore::connect(config).await?;
    let result = async {
        let mut broken = 0;
        for rule in SessionRule::ALL {
            let (count, ids) = store.session_rule_violations(rule, from, to, limit).await?;
            broken += count;
            println!(
                "{}: {count} session(s) ({})",
                rule.as_str(),
                rule.describe()
            );
            for id in ids {
                // Ids only: nothing else of a session is printed.
                let id = match id {
                    bson::Bson::ObjectId(oid) => oid.to_hex(),
                    other => other.into_relaxed_extjson().to_string(),
                };
                println!("  {id}");
            }
        }
        if broken > 0 {
            Err(Error::RulesBroken { sessions: broken })
        } else {
            Ok(())
        }
    }
    .await;
    store.shutdown().await;
    result
}
