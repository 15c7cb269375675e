//! `deploy/` checked with real tools: promtool (config, rules, rule unit tests, and every PromQL
//! expression of the rules and the dashboard), docker-compose, kubernetes-validate (offline
//! schemas) and systemd-analyze. Every metric name the rules and the dashboard use must be one
//! that vcmetrics exposes: the daemon's from a live scrape of `vcmetrics run` plus the families
//! its registry declares (the lag, watermark and last-success gauges get samples only after a
//! period's first run), the call metrics from the exporter's own builder (they appear only once
//! documents exist; `prometheus_e2e` scrapes them live from a real server). `docs/operations.md`
//! must name the files and `docs/alerts.md` have a runbook for every alert.
//!
//! `.ci/run` installs the tools; elsewhere a missing tool skips its check with a printed line
//! (and fails under `CI=true`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn have(tool: &str, version_flag: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is required in CI (.ci/run installs it)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: deploy check with {tool} (not installed)"
        );
    }
    found
}

/// Runs a tool; it must succeed, and print nothing to stderr when `quiet`.
fn check(cmd: &mut Command, quiet: bool) -> String {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && (!quiet || stderr.trim().is_empty()),
        "{cmd:?}\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

fn rules() -> Yaml {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// Where the rules' `runbook_url`s point by default: `docs/alerts.md` in the project's repository.
const RUNBOOKS: &str = "https://github.com/vcmetrics/vcmetrics/blob/main/docs/alerts.md";

/// (alert name, expression, `runbook_url` annotation) of every rule.
fn alerts() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for group in rules()["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap_or_default().to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
                rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    out
}

/// Every `expr` in the dashboard, with Grafana's variables replaced by example values.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/vcmetrics.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) if !e.is_empty() => {
                            out.push(e.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&json, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "the dashboard has {} queries",
        exprs.len()
    );
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("${period}", "hourly")
                .replace("$period", "hourly")
        })
        .collect()
}

/// Metric names in an expression: every `vcmetrics_`/`process_` identifier (histogram suffixes
/// removed). Every series this project queries has one of those prefixes, or is Prometheus' `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let ident_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if ident_start && (expr[i..].starts_with("vcmetrics_") || expr[i..].starts_with("process_"))
        {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let name = &expr[i..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The metric families a live `vcmetrics run` exposes against an unreachable MongoDB, from the
/// `# TYPE` lines of a scrape.
fn live_families() -> BTreeSet<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A dead port: the daemon's own families are there from the start; the call families, which
    // appear once documents exist, are checked live against a server in prometheus_e2e.
    let uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300";
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcmetrics"))
        .arg("run")
        .env("MONGODB_URI", uri)
        .env_remove("VCMETRICS_MONGODB_URI")
        .env("VCMETRICS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "vcmetrics did not serve /metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The call-metric and session-gauge families, as the exporter builds them from a document with
/// every field and from one read of the sessions (both appear only once read from MongoDB).
fn call_families() -> BTreeSet<String> {
    use vcmetrics::exporter::call_metrics::{families, ExportedWindow, WindowRole};
    let mut doc = bson::doc! {"period": "hourly", "date": bson::DateTime::now(), "updatedAt": bson::DateTime::now(), "errorCounts": {"E": 1}};
    for f in vcmetrics::metrics_document::FIELDS {
        doc.insert(f.name, 1);
    }
    let w = ExportedWindow {
        period: vcmetrics::window::Period::Hourly,
        role: WindowRole::Open,
        metrics: vcmetrics::metrics_document::WindowMetrics::from_document(&doc).unwrap(),
    };
    let sessions = vcmetrics::sessions::gauges::SessionGauges {
        upcoming: vec![1; 3],
        by_status: vec![1; 7],
        rules: vec![1; 2],
        ..Default::default()
    };
    families(&[w], 20)
        .unwrap()
        .iter()
        .chain(&vcmetrics::exporter::session_metrics::families(&sessions).unwrap())
        .map(|f| f.name().to_owned())
        .collect()
}

#[test]
fn prometheus_config_rules_and_rule_tests_pass_promtool() {
    if !have("promtool", "--version") {
        return;
    }
    check(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(deploy("prometheus/prometheus.yml")),
        false,
    );
    check(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(deploy("prometheus/alerts.yml")),
        false,
    );
    let tests = check(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(deploy("prometheus")),
        false,
    );
    assert!(tests.contains("SUCCESS"), "{tests}");
}

#[test]
fn every_promql_expression_parses_and_uses_only_exposed_metrics() {
    if !have("promtool", "--version") {
        return;
    }
    let mut exprs: Vec<String> = alerts().into_iter().map(|(_, e, _)| e).collect();
    exprs.extend(dashboard_exprs());
    // promtool parses expressions as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(e).unwrap(); // a JSON string is a YAML string
        file.push_str(&format!(
            "      - record: parse:expr{i}\n        expr: {quoted}\n"
        ));
    }
    let path = dir.path().join("exprs.yml");
    std::fs::write(&path, file).unwrap();
    check(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&path),
        false,
    );

    let mut exposed = live_families();
    assert!(exposed.contains("vcmetrics_mongodb_up"), "{exposed:?}");
    // Families whose series appear only after a period's first run (needs MongoDB).
    exposed.extend(
        vcmetrics::daemon::status::Status::new()
            .unwrap()
            .declared_families(),
    );
    // The call families as the exporter builds them (prometheus_e2e checks a live scrape of them
    // against a real server).
    exposed.extend(call_families());
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                exposed.contains(&name),
                "{name} (in `{e}`) is not exposed by vcmetrics"
            );
        }
    }
}

/// `docs/alerts.md`'s "Your copy of the rules" command, run as written: the rewritten rules point at
/// the new runbook base and job, and the rule tests, rewritten the same way, still pass.
#[test]
fn item_6_the_documented_rewrite_of_runbooks_and_job_keeps_the_rules_valid() {
    if !have("promtool", "--version") {
        return;
    }
    let readme = std::fs::read_to_string(root().join("docs/alerts.md")).unwrap();
    let section = readme.split("**Your copy of the rules.**").nth(1).unwrap();
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alerts.yml");
    let script = script
        .replace(
            "/etc/prometheus/rules/vcmetrics.yml",
            rules.to_str().unwrap(),
        )
        .replace(
            "deploy/prometheus/alerts.yml",
            deploy("prometheus/alerts.yml").to_str().unwrap(),
        );
    check(Command::new("bash").args(["-euc", &script]), true);

    let rewritten = std::fs::read_to_string(&rules).unwrap();
    assert!(!rewritten.contains(RUNBOOKS) && !rewritten.contains(r#"job="vcmetrics""#));
    assert!(rewritten.contains("runbook_url: https://git.example.internal/ops/vcmetrics/-/blob/main/docs/alerts.md#vcmetricsdown"));
    assert!(rewritten.contains(r#"job="kubernetes-pods""#));

    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml"))
        .unwrap()
        .replace(
            RUNBOOKS,
            "https://git.example.internal/ops/vcmetrics/-/blob/main/docs/alerts.md",
        )
        .replace(r#"job="vcmetrics""#, r#"job="kubernetes-pods""#)
        .replace("job: vcmetrics\n", "job: kubernetes-pods\n");
    std::fs::write(dir.path().join("alerts.test.yml"), tests).unwrap();
    check(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(dir.path()),
        false,
    );
}

#[test]
fn every_alert_has_a_runbook_and_the_operations_guide_names_the_deploy_files() {
    let runbooks = std::fs::read_to_string(root().join("docs/alerts.md")).unwrap();
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let alerts = alerts();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for (name, _, runbook) in &alerts {
        assert_eq!(
            runbook,
            &format!("{RUNBOOKS}#{}", name.to_lowercase()),
            "{name}: runbook_url must be an absolute link a pager can open"
        );
        assert!(
            runbooks.contains(&format!("\n### {name}\n")),
            "docs/alerts.md has no runbook section for {name}"
        );
    }
    for file in [
        "deploy/Dockerfile",
        "deploy/docker-compose.yml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/recompute-job.yaml",
        "deploy/systemd/vcmetrics.service",
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/vcmetrics.json",
    ] {
        assert!(root().join(file).exists(), "{file} missing");
        assert!(
            operations.contains(file),
            "docs/operations.md does not mention {file}"
        );
    }
}

#[test]
fn the_compose_file_is_valid() {
    if !have("docker-compose", "version") {
        return;
    }
    let compose = deploy("docker-compose.yml");
    check(
        Command::new("docker-compose")
            .arg("-f")
            .arg(&compose)
            .args(["config", "-q"]),
        false,
    );
    let services = check(
        Command::new("docker-compose")
            .arg("-f")
            .arg(&compose)
            .args(["--profile", "demo", "config", "--services"]),
        false,
    );
    for s in [
        "mongodb",
        "migrate",
        "vcmetrics",
        "prometheus",
        "grafana",
        "generator-history",
    ] {
        assert!(services.lines().any(|l| l == s), "{s} not in {services}");
    }
}

#[test]
fn kubernetes_manifests_pass_the_offline_schema_check() {
    if !have("kubernetes-validate", "--version") {
        return;
    }
    let dir = deploy("kubernetes");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // A ServiceMonitor is a custom resource: no schema for it offline.
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("servicemonitor.yaml")
        })
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 6);
    let out = check(
        Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.30.0"])
            .args(&manifests),
        false,
    );
    assert_eq!(out.matches("passed").count(), manifests.len(), "{out}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze", "--version") {
        return;
    }
    // A scratch root with the system's units and the binary where ExecStart expects it, so
    // nothing is installed on this machine.
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    for d in ["usr/local/bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    check(
        Command::new("cp")
            .args(["-r", "/usr/lib/systemd/system"])
            .arg(r.join("usr/lib/systemd")),
        true,
    );
    std::fs::copy(
        env!("CARGO_BIN_EXE_vcmetrics"),
        r.join("usr/local/bin/vcmetrics"),
    )
    .unwrap();
    std::fs::copy(
        deploy("systemd/vcmetrics.service"),
        r.join("etc/systemd/system/vcmetrics.service"),
    )
    .unwrap();
    // verify exits 0 on warnings (unknown keys, bad values): require silence too.
    check(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .arg("/etc/systemd/system/vcmetrics.service"),
        true,
    );
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("histogram_quantile(0.99, sum by (le) (rate(vcmetrics_run_duration_seconds_bucket[5m]))) and up"),
        ["vcmetrics_run_duration_seconds".to_owned()].into()
    );
}
