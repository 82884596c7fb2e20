#!/usr/bin/env bash
# One shard of a sharded simulator sweep: the command line that the nightly workflow
# (.github/workflows/nightly-sweep.yml), the Kubernetes Indexed Job (docs/k8s/sweep-job.yaml)
# and CI's own test of them (ci/test.sh) all run.
#
#   ci/sweep-shard.sh INDEX COUNT SEEDS OUT_DIR [more `run` flags]
#
# Runs the seeds S of SEEDS (START..END or random:N) with S % COUNT = INDEX, prints the report
# and writes it, with its JSON summary, to OUT_DIR/shard-INDEX-of-COUNT.{txt,json} for
# ci/sweep-merge.sh. Exits as the simulator does: 0 all passed, 1 a scenario failed, 2 a usage
# error. JADEDB_SIM names a built simulator (a container's, or a CI build's); without it,
# `cargo sim` builds and runs it.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 INDEX COUNT SEEDS OUT_DIR [run flags...]" >&2
  exit 2
fi
index=$1 count=$2 seeds=$3
if [[ $seeds == random:* && $count != 1 ]]; then
  # Each shard would draw its own start: draw it once and give every shard the range.
  echo "error: shards of a sweep need one range (START..END), not $seeds" >&2
  exit 2
fi
mkdir -p "$4"
out=$(cd "$4" && pwd)
shift 4
if [[ -n "${JADEDB_SIM:-}" ]]; then sim=("$(realpath "$JADEDB_SIM")"); else sim=(cargo sim); fi
cd "$(dirname "$0")/.."
name="$out/shard-$index-of-$count"
"${sim[@]}" run --seeds "$seeds" --shard "$index/$count" --json "$name.json" "$@" | tee "$name.txt"
