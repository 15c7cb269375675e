//! The reference in `docs/` against the code it describes: every configuration key, command and
//! metric family has its entry, and every entry names something that exists. The tables are
//! read as an operator reads them: the first column's backticked name of each row.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The backticked names in the first column of every table row of `text`, each split at
/// `, ` (one row may name several).
fn first_column_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let cell = l[1..].split(" | ").next().unwrap_or_default();
            cell.split(", ")
                .filter_map(|part| {
                    let part = part.trim();
                    let inner = part.strip_prefix('`')?;
                    Some(inner[..inner.find('`')?].to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn compare(what: &str, in_code: &BTreeSet<String>, documented: &BTreeSet<String>) {
    let missing: Vec<_> = in_code.difference(documented).collect();
    let stale: Vec<_> = documented.difference(in_code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: without a reference entry: {missing:?}; documented but not in the code: {stale:?}"
    );
}

#[test]
fn every_configuration_key_has_its_entry_and_no_entry_is_stale() {
    let (config, origins) = vcmetrics::config::validate_traced(toml::Table::new(), &[]).unwrap();
    let in_code: BTreeSet<String> = vcmetrics::config::effective::entries(&config, &origins)
        .into_iter()
        .map(|e| {
            let mut parts: Vec<&str> = e.key.split('.').collect();
            if parts[0] == "periods" {
                parts[1] = "<period>";
            }
            parts.join(".")
        })
        .collect();
    let documented: BTreeSet<String> = first_column_names(&doc("configuration.md"))
        .into_iter()
        .collect();
    compare("docs/configuration.md", &in_code, &documented);
}

#[test]
fn every_command_has_its_entry_and_no_entry_is_stale() {
    let cli = vcmetrics::cli::Cli::command();
    let in_code: BTreeSet<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let documented: BTreeSet<String> = first_column_names(&doc("commands.md"))
        .into_iter()
        .filter_map(|entry| {
            let command = entry.strip_prefix("vcmetrics ")?;
            Some(command.split_whitespace().next()?.to_owned())
        })
        .collect();
    compare("docs/commands.md", &in_code, &documented);
    // Every flag of every command appears in its entry (the long name, as typed).
    let text = doc("commands.md");
    let mut unnamed = Vec::new();
    for command in cli.get_subcommands() {
        let rows: String = text
            .lines()
            .filter(|l| l.starts_with(&format!("| `vcmetrics {}", command.get_name())))
            .collect();
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !rows.contains(&format!("--{long}")) {
                    unnamed.push(format!("vcmetrics {} --{long}", command.get_name()));
                }
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "docs/commands.md does not name {unnamed:?}"
    );
}

/// A row naming several families abbreviates the later ones to the part after the first two
/// words: `vcmetrics_window_join_successes`, `_join_denials`.
fn expand(names: Vec<String>) -> Vec<String> {
    let mut expanded = Vec::new();
    let mut prefix = String::new();
    for name in names {
        if let Some(rest) = name.strip_prefix('_') {
            expanded.push(format!("{prefix}_{rest}"));
        } else {
            prefix = name.splitn(3, '_').take(2).collect::<Vec<_>>().join("_");
            expanded.push(name);
        }
    }
    expanded
}

#[test]
fn every_metric_family_has_its_entry_and_no_entry_is_stale() {
    use vcmetrics::exporter::call_metrics::{families, ExportedWindow, WindowRole};
    let mut in_code: BTreeSet<String> = vcmetrics::daemon::status::Status::new()
        .unwrap()
        .declared_families()
        .into_iter()
        .collect();
    in_code.insert("vcmetrics_build_info".to_owned());
    let mut doc_fields = bson::doc! {
        "period": "hourly",
        "date": bson::DateTime::now(),
        "updatedAt": bson::DateTime::now(),
        "errorCounts": {"E": 1},
    };
    for f in vcmetrics::metrics_document::FIELDS {
        doc_fields.insert(f.name, 1);
    }
    let window = ExportedWindow {
        period: vcmetrics::window::Period::Hourly,
        role: WindowRole::Open,
        metrics: vcmetrics::metrics_document::WindowMetrics::from_document(&doc_fields).unwrap(),
    };
    let gauges = vcmetrics::sessions::gauges::SessionGauges {
        upcoming: vec![1; 3],
        by_status: vec![1; 7],
        rules: vec![1; 2],
        ..Default::default()
    };
    let sessions = vcmetrics::exporter::session_metrics::SessionMetricsCache::new().unwrap();
    sessions.failed().unwrap();
    let cache_text = String::from_utf8(sessions.text().to_vec()).unwrap();
    in_code.extend(
        families(&[window], 20)
            .unwrap()
            .iter()
            .chain(&vcmetrics::exporter::session_metrics::families(&gauges).unwrap())
            .map(|f| f.name().to_owned()),
    );
    in_code.extend(
        cache_text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned),
    );
    let documented: BTreeSet<String> = expand(first_column_names(&doc("metrics.md")))
        .into_iter()
        .filter(|name| name.starts_with("vcmetrics_"))
        .collect();
    compare("docs/metrics.md", &in_code, &documented);
}

#[test]
fn every_alert_has_its_runbook_in_the_alerts_reference() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    let runbooks: BTreeSet<String> = doc("alerts.md")
        .lines()
        .filter_map(|l| l.strip_prefix("### Vcmetrics"))
        .map(|name| format!("Vcmetrics{name}"))
        .collect();
    compare("docs/alerts.md", &alerts, &runbooks);
}

#[test]
fn the_readme_links_every_reference_file_and_stays_short() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let docs = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap();
    for entry in docs {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            readme.contains(&format!("](docs/{name}")),
            "README does not link docs/{name}"
        );
    }
    let lines = readme.lines().count();
    assert!(
        lines <= 260,
        "README.md has {lines} lines; the reference belongs in docs/"
    );
}
