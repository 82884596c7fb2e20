//! The files that spread a sweep over other engines (the nightly GitHub Actions workflow and
//! the Kubernetes Indexed Job) run the same command lines that CI exercises: each calls
//! `ci/sweep-shard.sh` and `ci/sweep-merge.sh`, which `ci/check-sharding.sh` runs on every CI
//! run, and each agrees with itself on the number of shards.

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value after `key:` on the first line that has it.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key:?}"))
        .trim()
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| l.contains(needle) && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no line runs {needle:?}"))
}

#[test]
fn the_nightly_workflow_runs_every_shard_of_a_million_seeds_and_merges_them() {
    let wf = read(".github/workflows/nightly-sweep.yml");
    let shards: u64 = value(&wf, "SHARDS").parse().expect("SHARDS is a number");
    let matrix = wf
        .lines()
        .find_map(|l| l.trim().strip_prefix("shard: ["))
        .expect("a matrix of shards")
        .trim_end_matches(']');
    let indices: Vec<u64> =
        matrix.split(',').map(|i| i.trim().parse().expect("an index")).collect();
    assert_eq!(indices, (0..shards).collect::<Vec<_>>(), "the matrix is every shard once");
    assert!(wf.contains("'0..1000000'"), "the nightly sweep is of 1,000,000 seeds");
    assert_eq!(
        line_with(&wf, "ci/sweep-shard.sh"),
        "run: ci/sweep-shard.sh ${{ matrix.shard }} $SHARDS $SEEDS results"
    );
    assert_eq!(line_with(&wf, "ci/sweep-merge.sh"), "run: ci/sweep-merge.sh results");
    assert_eq!(line_with(&wf, "cargo sim-build"), "- run: cargo sim-build");
}

#[test]
fn the_kubernetes_job_gives_each_completion_index_its_shard() {
    let job = read("docs/k8s/sweep-job.yaml");
    assert_eq!(value(&job, "completionMode"), "Indexed");
    let shards = value(&job, "completions");
    assert_eq!(
        line_with(&job, "ci/sweep-shard.sh"),
        format!(
            "- ci/sweep-shard.sh \"$JOB_COMPLETION_INDEX\" {shards} 0..1000000 \"/results/$RUN\""
        )
    );
    let merge = read("docs/k8s/merge-job.yaml");
    assert_eq!(line_with(&merge, "ci/sweep-merge.sh"), "- ci/sweep-merge.sh \"/results/$RUN\"");
    // Both name the same run directory.
    let run = |text: &str| line_with(text, "name: RUN").to_string();
    assert_eq!(run(&job), run(&merge));
    let image = read("docs/k8s/Dockerfile");
    assert!(line_with(&image, "COPY ci/").contains("ci/sweep-shard.sh ci/sweep-merge.sh"));
    assert!(image.contains("RUN cargo sim-build"));
}

#[test]
fn ci_runs_the_scripts_that_the_workflow_and_the_job_run() {
    let test = read("ci/test.sh");
    assert!(line_with(&test, "ci/check-sharding.sh").starts_with("ci/check-sharding.sh"));
    let check = read("ci/check-sharding.sh");
    assert!(line_with(&check, "ci/sweep-shard.sh").starts_with("ci/sweep-shard.sh \"$index\" 4"));
    assert!(line_with(&check, "ci/sweep-merge.sh").starts_with("ci/sweep-merge.sh"));
    let readme = read("README.md");
    for file in [".github/workflows/nightly-sweep.yml", "docs/k8s/sweep-job.yaml"] {
        assert!(readme.contains(file), "the README does not mention {file}");
    }
}
