//! The storage the live session gauges need; stated here and implemented by `store::MongoStore`
//! (and the tests' in-memory double).

use std::future::Future;

use super::gauges::{GaugeQueries, SessionGauges};
use crate::error::Result;

/// Counting the sessions collection's documents for the live gauges.
pub trait SessionStore: Send + Sync {
    /// The live session gauges: the counts of `sessions::gauges`' queries.
    fn session_gauges(
        &self,
        queries: &GaugeQueries,
    ) -> impl Future<Output = Result<SessionGauges>> + Send;
}
