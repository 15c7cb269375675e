//! The retention horizon (from when the audit log, with its archive, still holds every event),
//! and the guard that keeps thinned windows from being rebuilt.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::RangePlan;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;

/// The oldest instant whose audit events are all still stored. In the audit log alone that is
/// `now - retention`, where the retention is the configured override or else the audit log's
/// TTL; once `vcmetrics archive` has run, the point its runs recorded from which audit log and
/// archive together are complete (`archive::state`). `None`: every event is stored.
pub async fn retention_horizon(
    store: &impl Store,
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
pub async fn audit_retention(store: &impl Store, config: &Config) -> Result<Option<Duration>> {
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

/// Refuses a plan whose first window starts before the retention horizon, unless forced:
/// rebuilding it would replace correct history with undercounts.
pub fn check_retention(
    plan: &RangePlan,
    horizon: Option<DateTime<Utc>>,
    force: bool,
) -> Result<()> {
    let (Some(first), Some(horizon)) = (plan.windows.first(), horizon) else {
        return Ok(());
    };
    if first.start >= horizon || force {
        return Ok(());
    }
    let thinned = plan.windows.iter().filter(|w| w.start < horizon).count();
    Err(Error::Refused(format!(
        "{thinned} {} window(s) start before the retention horizon {}, from which the audit \
         log (with its archive, once `vcmetrics archive` has run) holds every event: the TTL has \
         deleted part of their events, so rebuilding them would undercount; narrow --from or \
         pass --force",
        plan.period,
        horizon.to_rfc3339()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::rollup::plan_range;
    use crate::window::Period;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn config() -> Config {
        from_toml("", &[]).unwrap()
    }

    #[test]
    fn windows_before_the_horizon_are_refused_unless_forced() {
        let now = utc("2026-01-10T00:00:00Z");
        let horizon = horizon(Some(Duration::from_secs(86_400)), now);
        assert_eq!(horizon, Some(utc("2026-01-09T00:00:00Z")));
        let plan = plan_range(
            &config(),
            Period::Hourly,
            utc("2026-01-08T22:00:00Z"),
            now,
            now,
        );
        let err = check_retention(&plan, horizon, false).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert!(
            err.to_string().contains("2 hourly window(s) start before"),
            "{err}"
        );
        check_retention(&plan, horizon, true).unwrap();
        let recent = plan_range(
            &config(),
            Period::Hourly,
            utc("2026-01-09T00:00:00Z"),
            now,
            now,
        );
        check_retention(&recent, horizon, false).unwrap();
    }

    #[test]
    fn without_a_retention_there_is_no_horizon() {
        let now = utc("2026-01-10T00:00:00Z");
        assert_eq!(horizon(None, now), None);
        assert_eq!(horizon(Some(Duration::MAX), now), None);
    }
}
