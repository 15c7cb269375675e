//! The retention horizon: from when the audit log, with its archive, still holds every event.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::storage::RetentionStore;
use crate::config::Config;
use crate::error::Result;

/// The oldest instant whose audit events are all still stored. In the audit log alone that is
/// `now - retention`, where the retention is the configured override or else the audit log's
/// TTL; once `vcmetrics archive` has run, the point its runs recorded from which audit log and
/// archive together are complete (`archive::state`). `None`: every event is stored.
pub async fn retention_horizon(
    store: &impl RetentionStore,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let retention = audit_retention(store, config).await?;
    let archive = store.archive_state().await?;
    Ok(archive.complete_from(
        horizon(retention, now),
        horizon(config.archive.retention, now),
    ))
}

/// How long the audit log keeps events: `audit_retention` if configured, else the TTL of its
/// `timestamp` index; `None` when neither exists.
pub async fn audit_retention(
    store: &impl RetentionStore,
    config: &Config,
) -> Result<Option<Duration>> {
    match config.audit_retention {
        Some(r) => Ok(Some(r)),
        None => store.audit_ttl().await,
    }
}

/// `now - retention`; `None` without a retention, or when it reaches before chrono's calendar
/// (every event is kept then).
pub fn horizon(retention: Option<Duration>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    retention.and_then(|r| {
        chrono::Duration::from_std(r)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn without_a_retention_there_is_no_horizon() {
        let now = utc("2026-01-10T00:00:00Z");
        assert_eq!(horizon(None, now), None);
        assert_eq!(horizon(Some(Duration::MAX), now), None);
    }
}
