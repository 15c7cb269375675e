//! Reading a configuration's keys: from the file's table or the environment variable that
//! overrides it, one typed value at a time, so that every problem is collected under its key
//! (or the variable it came from) and every value's origin is known.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::{Env, Problem};

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Neither the file nor the environment set it.
    Default,
    File,
    /// This environment variable.
    Environment(String),
}

/// Each key's origin, by its full name (`periods.hourly.schedule`); a key absent here is a
/// default.
pub type Origins = BTreeMap<String, Origin>;

/// The keys of a file's table and the environment, read one typed value at a time, so that every
/// problem is collected, each under its key (or the environment variable it came from).
pub(super) struct Sources<'a, E: Env> {
    pub(super) table: toml::Table,
    /// The table's path, for the names of nested keys (`periods.hourly.`).
    pub(super) prefix: String,
    pub(super) env: &'a E,
    pub(super) problems: &'a RefCell<Vec<Problem>>,
    /// Where each key's value came from, for `vcmetrics config`.
    pub(super) origins: &'a RefCell<Origins>,
}

impl<'a, E: Env> Sources<'a, E> {
    pub(super) fn problem(&self, key: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// The value of `key` from the first set environment variable of `env_names`, else from the
    /// file; `None` when neither has it or it is wrong (then a problem is recorded).
    pub(super) fn get<T: DeserializeOwned>(&mut self, key: &str, env_names: &[&str]) -> Option<T> {
        self.get_sourced(key, env_names).map(|(value, _)| value)
    }

    /// Like [`Sources::get`], with the name the value came under (for later cross-field
    /// problems).
    pub(super) fn get_sourced<T: DeserializeOwned>(
        &mut self,
        key: &str,
        env_names: &[&str],
    ) -> Option<(T, String)> {
        let file_value = self.table.remove(key);
        let full_key = format!("{}{key}", self.prefix);
        let (value, source, origin) = match env_names
            .iter()
            .find_map(|name| self.env.var(name).map(|v| (v, *name)))
        {
            Some((text, name)) => (
                toml::Value::String(text),
                format!("{full_key} (from ${name})"),
                Origin::Environment(name.to_owned()),
            ),
            None => (file_value?, full_key.clone(), Origin::File),
        };
        self.origins.borrow_mut().insert(full_key, origin);
        match T::deserialize(value) {
            Ok(v) => Some((v, source)),
            Err(e) => {
                self.problem(&source, e.to_string().trim_end());
                None
            }
        }
    }

    /// A nested table (`[periods]`), read with the same rules.
    pub(super) fn table(&mut self, key: &str) -> Option<Sources<'a, E>> {
        match self.table.remove(key) {
            None => None,
            Some(toml::Value::Table(table)) => Some(Sources {
                table,
                prefix: format!("{}{key}.", self.prefix),
                env: self.env,
                problems: self.problems,
                origins: self.origins,
            }),
            Some(other) => {
                self.problem(
                    &format!("{}{key}", self.prefix),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Every key nobody asked for is a problem: a typo must not silently become a default.
    pub(super) fn finish(self, known: &[&str]) {
        for key in self.table.keys() {
            self.problem(
                &format!("{}{key}", self.prefix),
                format!("unknown key (expected one of: {})", known.join(", ")),
            );
        }
    }
}
