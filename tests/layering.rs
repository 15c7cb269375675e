//! The map in `src/lib.rs` kept true: every import between `src/`'s top-level modules points down
//! the documented order, and no two modules import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/lib.rs`'s order, from the top down: a module may import only from those after it.
/// Modules on one line sit side by side and import nothing from each other.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["exporter"],
    &["daemon"],
    &["store"],
    &["sessions", "rollup"],
    &["archive"],
    &["generate"],
    &["error"],
    &["metrics_document", "pipeline_files"],
    &["config"],
    &["window"],
    &["clock"],
];

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("src/{top} is not in the layering of src/lib.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path (`rollup::pipeline`, `daemon` for `daemon/mod.rs`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere).
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The paths a file names, as module paths: `crate::a::b`, and `super::x` resolved against the
/// file's parent. Grouped imports (`crate::a::{b, c::d}`) give one path per item.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let preceded_by_ident = rest[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[i + prefix.len()..];
            if preceded_by_ident {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segments = base.clone();
            segments.extend(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            let after = &rest[path.len()..];
            if path.ends_with("::") && after.starts_with('{') {
                let group = &after[1..after.find('}').unwrap_or(after.len())];
                for item in group.split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").trim();
                    if !first.is_empty() && first != "self" {
                        let mut with = segments.clone();
                        with.push(first.to_owned());
                        paths.push(with);
                    }
                }
            }
            paths.push(segments);
        }
    }
    paths
}

/// Every module's imports of other modules: the longest known module prefix of each path it
/// names, leaving out its own ancestors (a `mod.rs` re-exporting its children is not a loop).
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    modules
        .iter()
        .map(|(module, file)| {
            let targets = named_paths(module, &code(file))
                .into_iter()
                .filter_map(|path| {
                    (1..=path.len())
                        .rev()
                        .map(|n| path[..n].to_vec())
                        .find(|prefix| modules.contains_key(prefix))
                })
                .filter(|target| target != module && !module.starts_with(target))
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

#[test]
fn every_import_between_folders_points_down_the_map() {
    let mut upward = Vec::new();
    for (module, targets) in imports() {
        let Some(top) = module.first() else { continue };
        for target in targets {
            let target_top = &target[0];
            if target_top != top && layer_of(target_top) <= layer_of(top) {
                upward.push(format!("{} -> {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the order of src/lib.rs:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let imports = imports();
    let mut pairs = Vec::new();
    for (module, targets) in &imports {
        for target in targets {
            if module < target && imports.get(target).is_some_and(|t| t.contains(module)) {
                pairs.push(format!("{} <-> {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        pairs.is_empty(),
        "modules importing each other:\n{}",
        pairs.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let module = vec!["error".to_owned()];
    let named = named_paths(&module, "use crate::rollup::{pipeline::Chunk, plan};");
    assert!(named.contains(&vec!["rollup".to_owned(), "pipeline".to_owned()]));
    assert!(layer_of("rollup") < layer_of("error"));
}
