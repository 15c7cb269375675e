//! `vcmetrics roles`: the least-privilege MongoDB roles for the configured database and
//! collections, as a mongosh script of `createRole` commands. Needs no server.

use std::io::Write;

use bson::Bson;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::privileges::{daemon_role, migrate_role};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config: &Config, _args: Args) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{}", script(config)).map_err(Error::Output)
}

fn script(config: &Config) -> String {
    let db = &config.database;
    let quoted = serde_json::Value::from(db.as_str());
    let mut text = format!(
        "// Least-privilege roles for vcmetrics {} in database {quoted} (docs/operations.md, \"Least privilege\").\n\
         // Run as a user administrator: vcmetrics roles | mongosh \"<admin connection string>\"\n",
        env!("CARGO_PKG_VERSION")
    );
    for role in [daemon_role(config), migrate_role(config)] {
        let command = Bson::Document(role.create_command(db)).into_relaxed_extjson();
        text += &format!("db.getSiblingDB({quoted}).runCommand({command});\n");
    }
    text += &format!(
        "// Then one user per role, each with its own password (interactive mongosh):\n\
         // db.getSiblingDB({quoted}).createUser({{user: \"vcmetrics\", pwd: passwordPrompt(), roles: [\"vcmetricsDaemon\"]}})\n\
         // db.getSiblingDB({quoted}).createUser({{user: \"vcmetrics-migrate\", pwd: passwordPrompt(), roles: [\"vcmetricsMigrate\"]}})\n"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_creates_both_roles_in_the_configured_database() {
        let config = crate::config::from_toml("database = \"platform\"", &[]).unwrap();
        let text = script(&config);
        let commands: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("db.getSiblingDB(\"platform\").runCommand("))
            .map(|l| serde_json::from_str(l.strip_suffix(");").unwrap()).unwrap())
            .collect();
        assert_eq!(commands.len(), 2, "{text}");
        assert_eq!(commands[0]["createRole"], "vcmetricsDaemon");
        assert_eq!(commands[1]["createRole"], "vcmetricsMigrate");
        assert_eq!(
            commands[0]["privileges"][1]["resource"],
            serde_json::json!({"db": "platform", "collection": "videocallmetrics"})
        );
    }
}
