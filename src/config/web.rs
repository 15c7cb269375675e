//! The endpoint's web configuration file (config key `web_config_file`): TLS and basic
//! authentication in the format of the Prometheus exporter toolkit (`--web.config.file`), so the
//! same file and the same Prometheus `scrape_config` work for vcmetrics as for node_exporter.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12           # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Keys of the toolkit that vcmetrics does not implement (cipher suites, curves, TLS 1.0/1.1,
//! HTTP/2, extra headers) are rejected by name rather than ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use yaml_rust2::{Yaml, YamlLoader};

/// The parsed file.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash. Empty: no authentication.
    pub basic_auth_users: BTreeMap<String, String>,
}

/// Names the users, never their hashes.
impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls)
            .field("basic_auth_users", &self.basic_auth_users.keys())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// A client certificate is verified against these CAs if the client sends one.
    VerifyIfGiven(PathBuf),
    /// Every client must present a certificate signed by these CAs.
    RequireAndVerify(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What is wrong with the file, with the key it is about (`tls_server_config.cert_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WebConfigError {
    pub path: String,
    pub message: String,
}

impl WebConfig {
    /// Reads and checks the file; the certificate and key files are loaded once, so a bad one
    /// stops the start instead of every handshake.
    pub fn read(path: &Path) -> Result<WebConfig, WebConfigError> {
        let fail = |message: String| WebConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = WebConfig::parse(&text, dir).map_err(fail)?;
        if let Some(tls) = &config.tls {
            tls.server_config().map_err(fail)?;
        }
        Ok(config)
    }

    /// Parses the YAML text; relative file names are taken from `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| {
            let m = e.marker();
            format!(
                "not valid YAML: {} (line {}, column {})",
                e.info(),
                m.line(),
                m.col() + 1
            )
        })?;
        let root = match docs.into_iter().next() {
            None | Some(Yaml::Null) => return Ok(WebConfig::default()),
            Some(Yaml::Hash(h)) => h,
            Some(_) => return Err("expected a mapping at the top level".into()),
        };
        let mut config = WebConfig::default();
        for (key, value) in root {
            match key_str(&key, "")? {
                "tls_server_config" => config.tls = tls_settings(value, dir)?,
                "basic_auth_users" => config.basic_auth_users = users(value)?,
                other @ "http_server_config" => return Err(unsupported(other)),
                other => {
                    return Err(format!(
                        "{other}: unknown key (expected tls_server_config or basic_auth_users)"
                    ))
                }
            }
        }
        Ok(config)
    }
}

fn unsupported(key: &str) -> String {
    format!(
        "{key}: not supported by vcmetrics (remove it; see docs/metrics.md, \"Securing /metrics\")"
    )
}

fn key_str<'a>(key: &'a Yaml, prefix: &str) -> Result<&'a str, String> {
    key.as_str()
        .ok_or_else(|| format!("{prefix}keys must be strings, found {key:?}"))
}

fn string(value: &Yaml, key: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key}: expected a string"))
}

fn tls_settings(value: Yaml, dir: &Path) -> Result<Option<TlsSettings>, String> {
    const P: &str = "tls_server_config.";
    let table = match value {
        Yaml::Null => return Ok(None),
        Yaml::Hash(h) => h,
        _ => return Err(format!("{}: expected a mapping", &P[..P.len() - 1])),
    };
    let (mut cert, mut key, mut ca, mut auth, mut min) = (None, None, None, None, None);
    for (k, v) in table {
        let name = key_str(&k, P)?;
        let full = format!("{P}{name}");
        match name {
            "cert_file" => cert = Some(dir.join(string(&v, &full)?)),
            "key_file" => key = Some(dir.join(string(&v, &full)?)),
            "client_ca_file" => ca = Some(dir.join(string(&v, &full)?)),
            "client_auth_type" => auth = Some(string(&v, &full)?),
            "min_version" => {
                min = Some(match string(&v, &full)?.as_str() {
                    "TLS12" => TlsVersion::Tls12,
                    "TLS13" => TlsVersion::Tls13,
                    other => {
                        return Err(format!("{full}: {other} is not supported (TLS12 or TLS13)"))
                    }
                })
            }
            "cert"
            | "key"
            | "client_ca"
            | "cipher_suites"
            | "curve_preferences"
            | "max_version"
            | "prefer_server_cipher_suites"
            | "client_allowed_sans" => return Err(unsupported(&full)),
            _ => {
                return Err(format!(
                    "{full}: unknown key (expected one of: cert_file, key_file, \
                     client_auth_type, client_ca_file, min_version)"
                ))
            }
        }
    }
    let cert_file = cert.ok_or(format!("{P}cert_file: missing"))?;
    let key_file = key.ok_or(format!("{P}key_file: missing"))?;
    let client_auth = match (auth.as_deref().unwrap_or("NoClientCert"), ca) {
        ("NoClientCert", None) => ClientAuth::NoClientCert,
        ("NoClientCert", Some(_)) => {
            return Err(format!(
                "{P}client_ca_file: set, but client_auth_type is NoClientCert (use \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
        ("VerifyClientCertIfGiven", Some(ca)) => ClientAuth::VerifyIfGiven(ca),
        ("RequireAndVerifyClientCert", Some(ca)) => ClientAuth::RequireAndVerify(ca),
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return Err(format!(
                "{P}client_ca_file: missing (client_auth_type needs it)"
            ))
        }
        (other, _) => {
            return Err(format!(
                "{P}client_auth_type: {other} is not supported (NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        client_auth,
        min_version: min.unwrap_or(TlsVersion::Tls12),
    }))
}

fn users(value: Yaml) -> Result<BTreeMap<String, String>, String> {
    const KEY: &str = "basic_auth_users";
    let table = match value {
        Yaml::Null => return Ok(BTreeMap::new()),
        Yaml::Hash(h) => h,
        _ => {
            return Err(format!(
                "{KEY}: expected a mapping of user name to bcrypt hash"
            ))
        }
    };
    let mut users = BTreeMap::new();
    for (k, v) in table {
        let user = key_str(&k, "basic_auth_users.")?.to_owned();
        let hash = string(&v, &format!("{KEY}.{user}"))?;
        // Only the hash's shape is checked; the hash itself is never printed.
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "{KEY}.{user}: not a bcrypt hash ($2y$…; make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            ));
        }
        if user.contains(':') {
            return Err(format!("{KEY}.{user}: a user name cannot contain ':'"));
        }
        users.insert(user, hash);
    }
    Ok(users)
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// The server's TLS configuration. The certificate and key are re-read when their files
    /// change (certificate rotation needs no restart).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(crypto())
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls_server_config: {e}"))?;
        let client_verifier = |ca: &Path| {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "tls_server_config.client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            Ok::<_, String>(WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crypto(),
            ))
        };
        let builder = match &self.client_auth {
            ClientAuth::NoClientCert => builder.with_no_client_auth(),
            ClientAuth::VerifyIfGiven(ca) => builder.with_client_cert_verifier(
                client_verifier(ca)?
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            ),
            ClientAuth::RequireAndVerify(ca) => builder.with_client_cert_verifier(
                client_verifier(ca)?
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            ),
        };
        let resolver = RotatingCertificate::load(self.cert_file.clone(), self.key_file.clone())?;
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The leaf certificate of `cert_file`, for clients that pin it (`vcmetrics health`).
pub fn leaf_certificate(path: &Path) -> Result<CertificateDer<'static>, String> {
    Ok(certificates(path, "tls_server_config.cert_file")?.remove(0))
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(cert, "tls_server_config.cert_file")?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls_server_config.key_file: {}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, &crypto()).map_err(|e| {
        format!(
            "tls_server_config: {} and {} do not make a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The server certificate, re-read at a handshake when either file's modification time changed.
/// A broken new pair is logged and the previous one kept.
#[derive(Debug)]
struct RotatingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl RotatingCertificate {
    fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, String> {
        let stamps = (modified(&cert_file), modified(&key_file));
        let key = certified_key(&cert_file, &key_file)?;
        Ok(RotatingCertificate {
            current: Mutex::new((stamps.0, stamps.1, key)),
            cert_file,
            key_file,
        })
    }
}

impl ResolvesServerCert for RotatingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if (current.0, current.1) != stamps {
            match certified_key(&self.cert_file, &self.key_file) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                    *current = (stamps.0, stamps.1, key);
                }
                Err(error) => {
                    // Remember the stamps: one warning per change, not one per handshake.
                    tracing::warn!(%error, "TLS certificate files changed but cannot be used; keeping the previous pair");
                    current.0 = stamps.0;
                    current.1 = stamps.1;
                }
            }
        }
        Some(current.2.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/vcmetrics"))
    }

    const HASH: &str = "$2y$04$hjdGvVxjPZjmqc/P3XhmsuH6eKNNk4BB0ERhkOgEbidSL2MZdDNG6";

    #[test]
    fn the_exporter_toolkit_format_is_read_with_paths_from_the_file_s_directory() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\nbasic_auth_users:\n  prometheus: {HASH}\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/vcmetrics/tls/server.crt"));
        assert_eq!(tls.key_file, Path::new("/abs/server.key"));
        assert_eq!(
            tls.client_auth,
            ClientAuth::RequireAndVerify("/etc/vcmetrics/ca.crt".into())
        );
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(c.basic_auth_users["prometheus"], HASH);
        assert_eq!(parse("").unwrap(), WebConfig::default());
        assert_eq!(parse("basic_auth_users:\n").unwrap(), WebConfig::default());
    }

    #[test]
    fn every_problem_names_its_key_and_never_prints_a_hash() {
        for (text, expected) in [
            ("tls_server_config:\n  key_file: k\n", "tls_server_config.cert_file: missing"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [x]\n", "tls_server_config.cipher_suites: not supported"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n", "tls_server_config.min_version: TLS10 is not supported"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n", "tls_server_config.client_ca_file: missing"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: x\n", "client_auth_type: RequireAnyClientCert is not supported"),
            ("basic_auth_users:\n  alice: secret-in-clear\n", "basic_auth_users.alice: not a bcrypt hash"),
            ("http_server_config:\n  http2: false\n", "http_server_config: not supported"),
            ("tls_config:\n  cert_file: c\n", "tls_config: unknown key"),
            ("basic_auth_users: [alice]\n", "basic_auth_users: expected a mapping"),
            ("a: [\n", "not valid YAML"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(!e.contains("secret-in-clear") && !e.contains(HASH), "{e}");
        }
    }

    #[test]
    fn unreadable_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
        )
        .unwrap();
        let e = WebConfig::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("tls_server_config.cert_file") && e.contains("none.crt"),
            "{e}"
        );
    }
}
