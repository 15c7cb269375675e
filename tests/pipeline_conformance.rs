//! Runs the mingo pipeline-conformance suite (`tests/conformance/`, Node's test runner) against
//! this build's `vcmetrics` binary. The suite needs its npm dependencies: `scripts/test` (the
//! README's test command) installs them with `npm ci`.

use std::path::Path;
use std::process::Command;

#[test]
fn pipelines_conform_to_the_hand_written_expectations_under_mingo() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    assert!(
        suite.join("node_modules/mingo").is_dir(),
        "the conformance suite's npm dependencies are missing: run `npm ci --prefix tests/conformance` \
         (scripts/test does this)"
    );
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .current_dir(&suite)
        .env("VCMETRICS_BIN", env!("CARGO_BIN_EXE_vcmetrics"))
        .output()
        .expect("node is needed for the pipeline conformance suite");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "pipeline conformance failed:\n{report}"
    );
    assert!(report.contains("pass "), "the suite ran no test:\n{report}");
}
