//! The Prometheus endpoint: the daemon's own metrics (`daemon::self_metrics`), the call metrics of every
//! period's open and last closed window (`call_metrics`, kept fresh by `call_metrics_cache`), the
//! live session gauges (`session_metrics`), and the
//! health endpoints (`server`), optionally behind TLS and basic authentication (`config::web`,
//! `basic_auth`). Read-only towards MongoDB; a scrape never touches it.

pub mod basic_auth;
pub mod call_metrics;
pub mod call_metrics_cache;
pub mod server;
pub mod session_metrics;
