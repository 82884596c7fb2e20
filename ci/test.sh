#!/usr/bin/env bash
# Every test JadeDB has, in the order a failure is cheapest to find: formatting, lints of both
# builds (normal and simulated), unit and cross-crate tests, the simulated tests (planted bugs,
# determinism, regression seeds, sharding), a sweep of 2,000 seeds, a sharded sweep run by the
# scripts the nightly workflow and the Kubernetes Job run, and a short sweep from a random
# start (new seeds on every run; it prints them, so a failure replays). `.ci/run` calls
# exactly this.
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
step "simulated tests: planted bugs, determinism, regression seeds, sharding"
cargo sim-test
step "simulator sweep"
cargo sim run --seeds 0..2000
step "sharded sweep and merge, by the scripts of the nightly workflow and the Kubernetes Job"
ci/check-sharding.sh
step "simulator sweep from a random start"
cargo sim run --seeds random:1000 --time-budget 3m
