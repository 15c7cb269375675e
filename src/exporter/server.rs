//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`; anything else is 404. With a web
//! configuration, over TLS, and with basic authentication for everything but the health checks.
//!
//! Everything it serves is in memory (the daemon's registry and the call-metrics snapshot), so
//! it answers while MongoDB is down and while a run is going.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::basic_auth::BasicAuth;
use super::call_metrics_cache::CallMetricsCache;
use super::session_metrics::SessionMetricsCache;
use crate::clock::Clock;
use crate::config::web::WebConfig;
use crate::daemon::status::Status;

/// What the handlers read.
pub struct Endpoint<C> {
    status: Arc<Status>,
    calls: Arc<CallMetricsCache>,
    sessions: Option<Arc<SessionMetricsCache>>,
    clock: C,
    /// The daemon's own metrics as text, re-encoded at most once per [`DAEMON_TEXT_TTL`]
    /// (gathering includes the process collector's reads of /proc).
    daemon_text: Mutex<Option<(Instant, Bytes)>>,
}

/// Scrapes come every few seconds at most; within a second the daemon's numbers may be reused.
pub const DAEMON_TEXT_TTL: Duration = Duration::from_secs(1);

impl<C: Clock> Endpoint<C> {
    pub fn new(status: Arc<Status>, calls: Arc<CallMetricsCache>, clock: C) -> Self {
        Endpoint {
            status,
            calls,
            sessions: None,
            clock,
            daemon_text: Mutex::new(None),
        }
    }

    /// Serves the session gauges too.
    pub fn with_sessions(mut self, sessions: Arc<SessionMetricsCache>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    fn daemon_text(&self) -> prometheus::Result<Bytes> {
        let mut cached = self.daemon_text.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, text)) = cached.as_ref() {
            if at.elapsed() < DAEMON_TEXT_TTL {
                return Ok(text.clone());
            }
        }
        self.status.update_gauges(self.clock.now());
        let mut text = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.status.registry().gather(), &mut text)?;
        let text = Bytes::from(text);
        *cached = Some((Instant::now(), text.clone()));
        Ok(text)
    }

    pub fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        match (method, path) {
            (&Method::GET, "/metrics") => {
                let calls = self.calls.text();
                let sessions = self.sessions.as_ref().map(|s| s.text()).unwrap_or_default();
                match self.daemon_text() {
                    Ok(daemon) => {
                        // Distinct metric names, so the parts concatenate into one exposition.
                        let mut body =
                            Vec::with_capacity(daemon.len() + calls.len() + sessions.len());
                        body.extend_from_slice(&daemon);
                        body.extend_from_slice(&calls);
                        body.extend_from_slice(&sessions);
                        reply(StatusCode::OK, TextEncoder::new().format_type(), body)
                    }
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        TEXT,
                        format!("cannot encode metrics: {e}\n"),
                    ),
                }
            }
            (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
            (&Method::GET, "/readyz") => {
                let role = if self.status.is_leader() {
                    "leader"
                } else {
                    "standby"
                };
                let missing = self.status.missing_indexes();
                if !self.status.mongodb_up() {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        format!("not ready: MongoDB unreachable, {role}\n"),
                    )
                } else if !missing.is_empty() {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        format!(
                            "not ready: the database lacks {}; run `vcmetrics migrate`, {role}\n",
                            missing.join(", ")
                        ),
                    )
                } else {
                    reply(
                        StatusCode::OK,
                        TEXT,
                        format!("ready: MongoDB reachable, {role}\n"),
                    )
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// TLS and authentication in front of the [`Endpoint`], from the web configuration.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<TlsAcceptor>,
    auth: Arc<BasicAuth>,
}

/// A client that opened a connection has this long to finish the TLS handshake, and to send a
/// request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections at once; more are closed at once (Prometheus needs one per
/// scrape target, probes one each): idle clients cannot use up the process's file descriptors.
const MAX_CONNECTIONS: usize = 256;

impl Security {
    /// Plain HTTP, no authentication, without a web configuration.
    pub fn new(web: Option<&WebConfig>) -> Result<Self, String> {
        let Some(web) = web else {
            return Ok(Security::default());
        };
        let tls = match &web.tls {
            Some(settings) => Some(TlsAcceptor::from(settings.server_config()?)),
            None => None,
        };
        Ok(Security {
            tls,
            auth: Arc::new(BasicAuth::new(web.basic_auth_users.clone())),
        })
    }

    pub fn describe(&self) -> &'static str {
        match (self.tls.is_some(), self.auth.is_required()) {
            (false, false) => "http",
            (false, true) => "http, basic auth",
            (true, false) => "https",
            (true, true) => "https, basic auth",
        }
    }
}

/// Serves until `shutdown` flips; then stops accepting and closes connections.
pub async fn serve<C: Clock>(
    listener: TcpListener,
    endpoint: Arc<Endpoint<C>>,
    security: Security,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("too many connections: closing a new one");
                    continue;
                };
                let endpoint = endpoint.clone();
                let security = security.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let auth = security.auth;
                    match security.tls {
                        None => serve_connection(stream, endpoint, auth).await,
                        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, endpoint, auth).await,
                            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                            Err(_) => debug!("TLS handshake timed out"),
                        },
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
}

/// The health endpoints answer without credentials (probes and `vcmetrics health` have none;
/// they reveal only whether the process is up and MongoDB reachable); everything else needs them.
fn needs_credentials(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz")
}

async fn serve_connection<C: Clock, IO>(io: IO, endpoint: Arc<Endpoint<C>>, auth: Arc<BasicAuth>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let endpoint = endpoint.clone();
        let auth = auth.clone();
        async move {
            let path = req.uri().path();
            let response = if needs_credentials(path) && !auth.allows(req.headers()).await {
                unauthorized()
            } else {
                endpoint.respond(req.method(), path)
            };
            Ok::<_, Infallible>(response)
        }
    });
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = reply(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n");
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"vcmetrics\", charset=\"UTF-8\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use http_body_util::BodyExt;

    fn endpoint() -> Endpoint<SystemClock> {
        Endpoint::new(
            Arc::new(Status::new().unwrap()),
            Arc::new(CallMetricsCache::default()),
            SystemClock,
        )
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_needs_mongodb_and_says_leader_or_standby() {
        let e = endpoint();
        let r = e.respond(&Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r).await, "not ready: MongoDB unreachable, standby\n");
        e.status.set_mongodb_up(true);
        e.status.leadership().set(Some((
            tokio::time::Instant::now() + Duration::from_secs(60),
            crate::store::HeldLease {
                epoch: 1,
                settled_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            },
        )));
        let r = e.respond(&Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "ready: MongoDB reachable, leader\n");
        assert_eq!(e.respond(&Method::GET, "/healthz").status(), StatusCode::OK);
        assert_eq!(e.respond(&Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            e.respond(&Method::POST, "/metrics").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn readiness_names_the_missing_indexes_and_migrate() {
        let e = endpoint();
        e.status.set_mongodb_up(true);
        e.status.set_missing_indexes(vec![
            "videocallmetrics {period: 1, date: 1} (unique)".to_owned()
        ]);
        let r = e.respond(&Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(r).await,
            "not ready: the database lacks videocallmetrics {period: 1, date: 1} (unique); run \
             `vcmetrics migrate`, standby\n"
        );
        let text = String::from_utf8(e.daemon_text().unwrap().to_vec()).unwrap();
        assert!(
            text.contains("vcmetrics_database_missing_indexes 1\n"),
            "{text}"
        );
        e.status.set_missing_indexes(Vec::new());
        assert_eq!(e.respond(&Method::GET, "/readyz").status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_has_the_daemon_series_from_the_start_and_lag_once_known() {
        let e = endpoint();
        let text = body(e.respond(&Method::GET, "/metrics")).await;
        for series in [
            "vcmetrics_runs_total{outcome=\"failed\",period=\"monthly\"} 0",
            "vcmetrics_ticks_skipped_total{period=\"hourly\",reason=\"overlap\"} 0",
            "vcmetrics_mongodb_up 0",
            "vcmetrics_leader 0",
            "vcmetrics_run_duration_seconds_count{period=\"daily\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        assert!(!text.contains("vcmetrics_data_lag_seconds{"));
        let watermark = chrono::Utc::now() - chrono::Duration::seconds(90);
        e.status
            .set_watermark(crate::window::Period::Hourly, watermark);
        // The daemon's part of a scrape is reused for a second.
        tokio::time::sleep(DAEMON_TEXT_TTL).await;
        let text = body(e.respond(&Method::GET, "/metrics")).await;
        let lag: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("vcmetrics_data_lag_seconds{period=\"hourly\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((90.0..100.0).contains(&lag), "{lag}");
    }

    /// A client that connects and sends nothing is closed once the header timeout passes, so
    /// idle connections cannot pile up (paused time: the runtime skips ahead while it waits).
    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_closed_after_the_header_timeout() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            Arc::new(endpoint()),
            Security::default(),
            stopped,
        ));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        let waited = started.elapsed();
        assert!(
            waited >= HANDSHAKE_TIMEOUT && waited < 2 * HANDSHAKE_TIMEOUT,
            "{waited:?}"
        );
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
