//! `vcmetrics health`: exit 0 when the daemon's `/healthz` (or `/readyz`) answers 200. For
//! container health checks in images without a shell or an HTTP client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let check = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
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
