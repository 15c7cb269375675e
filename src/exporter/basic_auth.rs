//! HTTP basic authentication against the web configuration's bcrypt hashes.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), too slow for every scrape: a
//! verified (user, password, hash) triple is remembered by its SHA-256 digest, never in clear,
//! as the exporter toolkit does. Verification runs on the blocking pool, off the reactor.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::HeaderMap;

/// The users of `basic_auth_users`; no users means no authentication.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Checked against when the user is unknown, made at the highest cost of the configured
    /// hashes: an unknown user costs as long as a wrong password, so users cannot be probed
    /// by timing.
    unknown_user_hash: String,
    /// One bcrypt at a time: wrong passwords cannot take more than one core from the rollups.
    verifying: tokio::sync::Semaphore,
}

/// The verified set stays small: one entry per distinct good (user, password) seen.
const MAX_REMEMBERED: usize = 64;

impl BasicAuth {
    /// Makes the unknown-user hash (tens of milliseconds): call at start, not per request.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let unknown_user_hash = if users.is_empty() {
            String::new() // no authentication: never checked
        } else {
            bcrypt::hash("no such user", cost).unwrap_or_default()
        };
        BasicAuth {
            unknown_user_hash,
            users,
            verified: Mutex::default(),
            verifying: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn is_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the request's `Authorization` header names a user with the right password.
    pub async fn allows(self: &Arc<Self>, headers: &HeaderMap) -> bool {
        if !self.is_required() {
            return true;
        }
        let Some((user, password)) = headers.get(AUTHORIZATION).and_then(credentials) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.unknown_user_hash.clone(), false),
        };
        let digest = digest(&user, &password, &hash);
        if known && self.remembered(&digest) {
            return true;
        }
        let Ok(_turn) = self.verifying.acquire().await else {
            return false;
        };
        let good = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if good && known {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(digest);
        }
        good && known
    }

    fn remembered(&self, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }
}

impl Default for BasicAuth {
    /// No users: no authentication.
    fn default() -> Self {
        BasicAuth::new(BTreeMap::new())
    }
}

fn digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        // Length-prefixed, so no two triples share an input.
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        h
    }

    fn auth() -> Arc<BasicAuth> {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        Arc::new(BasicAuth::new(BTreeMap::from([(
            "prometheus".to_owned(),
            hash,
        )])))
    }

    #[tokio::test]
    async fn only_a_known_user_with_the_right_password_passes() {
        let a = auth();
        assert!(a.allows(&header("prometheus", "s3cret:with colon")).await);
        // Remembered now, and still exact.
        assert!(a.allows(&header("prometheus", "s3cret:with colon")).await);
        assert!(!a.allows(&header("prometheus", "s3cret")).await);
        assert!(!a.allows(&header("grafana", "s3cret:with colon")).await);
        assert!(!a.allows(&HeaderMap::new()).await);
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(!a.allows(&bearer).await);
        let mut garbage = HeaderMap::new();
        garbage.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!a.allows(&garbage).await);
    }

    #[tokio::test]
    async fn no_users_means_no_authentication() {
        let a = Arc::new(BasicAuth::default());
        assert!(!a.is_required());
        assert!(a.allows(&HeaderMap::new()).await);
    }

    #[test]
    fn the_unknown_user_hash_costs_as_much_as_the_dearest_configured_one() {
        let users = BTreeMap::from([
            ("a".to_owned(), bcrypt::hash("x", 4).unwrap()),
            ("b".to_owned(), bcrypt::hash("y", 6).unwrap()),
        ]);
        let parts: bcrypt::HashParts = BasicAuth::new(users).unknown_user_hash.parse().unwrap();
        assert_eq!(parts.get_cost(), 6);
    }
}
