//! Records the git commit the binary is built from, for `vcmetrics_build_info`: the
//! `VCMETRICS_COMMIT` environment variable if set (container builds have no .git), else
//! `git rev-parse --short HEAD`, else "unknown".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VCMETRICS_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    let commit = std::env::var("VCMETRICS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VCMETRICS_COMMIT={commit}");
}
