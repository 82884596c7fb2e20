#!/usr/bin/env bash
# Every test JadeDB has, in the order a failure is cheapest to find: formatting, lints of both
# builds (normal and simulated), unit and cross-crate tests, the simulated tests (planted bugs,
# determinism, regression seeds) and a sweep of 2,000 seeds. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "lints (normal build)"
cargo clippy --workspace --all-targets -- -D warnings
step "lints (simulated build)"
cargo sim-clippy -- -D warnings
step "unit and cross-crate tests"
cargo test --workspace
step "simulated tests: planted bugs, determinism, regression seeds"
cargo sim-test
step "simulator sweep"
cargo sim run --seeds 0..2000
