#!/usr/bin/env bash
# Merges the shards of a sweep (ci/sweep-shard.sh) into the report of the whole sweep.
#
#   ci/sweep-merge.sh DIR
#
# Reads DIR/shard-*.json, prints the merged report and writes it, with its JSON summary, to
# DIR/merged.{txt,json}. Exits 0 if every scenario of every shard passed, 1 if one failed, 2 if
# a shard is missing or given twice, or the summaries are of different sweeps.
# JADEDB_SIM names a built simulator, as for ci/sweep-shard.sh.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$(cd "$1" && pwd)
if [[ -n "${JADEDB_SIM:-}" ]]; then sim=("$(realpath "$JADEDB_SIM")"); else sim=(cargo sim); fi
cd "$(dirname "$0")/.."
shopt -s nullglob
shards=("$dir"/shard-*.json)
if [[ ${#shards[@]} -eq 0 ]]; then
  echo "error: no shard summaries (shard-*.json) in $dir" >&2
  exit 2
fi
"${sim[@]}" merge "${shards[@]}" --json "$dir/merged.json" | tee "$dir/merged.txt"
