//! `vcmetrics health`: exit 0 when the daemon's `/healthz` (or `/readyz`) answers 200. For
//! container health checks in images without a shell or an HTTP client.
//!
//! With TLS configured (`web_config_file`), it speaks TLS and accepts exactly the certificate of
//! `cert_file`: it checks its own process on loopback, where no name in the certificate would
//! match the address it dials.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::web::leaf_certificate;
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check /readyz (MongoDB reachable) instead of /healthz (process alive).
    #[arg(long)]
    pub ready: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    // The daemon listens on `listen`; an unspecified address is reached on loopback.
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let tls = config.web.as_ref().and_then(|w| w.tls.as_ref());
    let connector = match tls {
        Some(tls) => Some(pinned_connector(&tls.cert_file).map_err(Error::Unhealthy)?),
        None => None,
    };
    let check = async {
        let stream = TcpStream::connect(address).await?;
        match connector {
            None => get(stream, path, &address.to_string()).await,
            Some(connector) => {
                let name = ServerName::from(address.ip());
                let stream = connector.connect(name, stream).await?;
                get(stream, path, &address.to_string()).await
            }
        }
    };
    let response = tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .map_err(|_| Error::Unhealthy(format!("{path} on {address} did not answer within 5 s")))?
        .map_err(|e| Error::Unhealthy(format!("{path} on {address}: {e}")))?;
    let status_line = response.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        println!(
            "{}",
            response.split("\r\n\r\n").nth(1).unwrap_or_default().trim()
        );
        Ok(())
    } else {
        Err(Error::Unhealthy(format!(
            "{path} on {address}: {status_line}"
        )))
    }
}

async fn get(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
    host: &str,
) -> std::io::Result<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    // A TLS peer may close without close_notify after the response; what was read counts.
    match stream.read_to_end(&mut response).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn pinned_connector(cert_file: &Path) -> std::result::Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertificate {
        certificate: leaf_certificate(cert_file)?,
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts the one certificate the daemon was configured with (its signatures still checked).
#[derive(Debug)]
struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the configured cert_file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
