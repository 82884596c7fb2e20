//! Scenario files as regression tests: every file in `tests/scenarios/` (written by `cargo sim
//! shrink`) is replayed by content. Without a planted bug each must pass, so a bug that comes
//! back into the engine fails here with the small scenario that shows it; a file shrunk from a
//! planted bug must also still fail its check with that bug planted, so the test keeps its
//! teeth. Every planted bug has such a file, of at most 50 operations, and the shrinker itself
//! is run end to end on one planted bug. Runs only in the simulated build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::config::{Bug, ScenarioConfig};
use jadedb_sim::runner::{run_config_within, SEED_BUDGET};
use jadedb_sim::scenario_file::{check_of, ScenarioFile};
use jadedb_sim::trace::Trace;
use std::path::{Path, PathBuf};

/// The most operations a planted bug's shrunk scenario may hold.
const OPS_MAX: usize = 50;

fn scenario_files() -> Vec<(PathBuf, ScenarioFile)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    #[allow(clippy::disallowed_methods)] // the test's own inputs
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(PathBuf, ScenarioFile)> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a readable scenario file");
            let file = ScenarioFile::from_json(&text)
                .unwrap_or_else(|e| panic!("{}: not a scenario file: {e}", p.display()));
            (p, file)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Why `config` failed, if it did.
fn failure_of(config: &ScenarioConfig) -> Option<String> {
    run_config_within(config.clone(), Trace::silent(), SEED_BUDGET).failure
}

#[test]
fn every_scenario_file_passes_and_each_planted_bug_still_fails_its_check() {
    let files = scenario_files();
    assert!(!files.is_empty(), "no scenario files");
    for (path, file) in &files {
        let name = path.display();
        let without = ScenarioConfig { bug: None, ..file.config.clone() };
        if let Some(why) = failure_of(&without) {
            panic!("{name} fails without a planted bug: {why}");
        }
        if file.config.bug.is_some() {
            let why = failure_of(&file.config)
                .unwrap_or_else(|| panic!("{name} passes with its bug planted"));
            assert_eq!(check_of(&why), file.check, "{name} failed another check: {why}");
        }
        println!("{name}: {} operations, check {:?}", file.config.ops(), file.check);
    }
}

#[test]
fn every_planted_bug_has_a_shrunk_scenario_of_at_most_50_operations() {
    let files = scenario_files();
    for bug in Bug::ALL {
        let smallest = files
            .iter()
            .filter(|(_, f)| f.config.bug == Some(bug))
            .map(|(_, f)| f.config.ops())
            .min()
            .unwrap_or_else(|| panic!("no scenario file for the planted bug {bug}"));
        assert!(smallest <= OPS_MAX, "{bug}: its smallest scenario has {smallest} operations");
    }
}

#[test]
fn a_failing_seed_shrinks_to_a_small_scenario_failing_the_same_check() {
    // Seed 1 finds the planted bug `ack-before-sync` with 165 operations.
    let config = ScenarioConfig::draw(1, Some(Bug::AckBeforeSync));
    let reason = failure_of(&config).expect("seed 1 finds the bug");
    let shrunk = jadedb_sim::shrink::shrink(config, 500, &mut |_| {}).expect("it shrinks");
    assert_eq!(shrunk.check, check_of(&reason));
    assert!(shrunk.ops_after <= OPS_MAX, "shrunk to {} operations", shrunk.ops_after);
    assert!(shrunk.ops_after < shrunk.ops_before / 10);
    let again = failure_of(&shrunk.config).expect("the shrunk scenario fails");
    assert_eq!(check_of(&again), shrunk.check);
    let without = ScenarioConfig { bug: None, ..shrunk.config };
    assert_eq!(failure_of(&without), None, "the shrunk scenario passes without the bug");
}
