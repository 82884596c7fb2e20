#!/usr/bin/env bash
# Runs a small sweep the way the nightly workflow and the Kubernetes Job run a large one
# (ci/sweep-shard.sh for each of 4 shards, then ci/sweep-merge.sh) and checks that the merged
# report is the report of the same sweep unsharded: every line the same but for timings.
#
#   ci/check-sharding.sh [SEEDS]    (default 0..400)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-0..400}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo sim-build
export JADEDB_SIM=target/sim/release/jadedb-sim
for index in 0 1 2 3; do
  ci/sweep-shard.sh "$index" 4 "$seeds" "$dir/shards" >/dev/null
done
ci/sweep-merge.sh "$dir/shards" >/dev/null
"$JADEDB_SIM" run --seeds "$seeds" --json "$dir/whole.json" >"$dir/whole.txt"
# The lines without their wall-clock figures (and without the lines that only a shard or a merge
# prints).
counts() {
  grep -vE '^(merge|shard|speed):' "$1" | sed -E 's/ in [0-9.]+s \([0-9.]+ per second\)//'
}
if ! diff <(counts "$dir/whole.txt") <(counts "$dir/shards/merged.txt"); then
  echo "the merged report of 4 shards of $seeds differs from the unsharded one" >&2
  exit 1
fi
grep '^sim:' "$dir/shards/merged.txt" | sed "s/^/sharded sweep of $seeds in 4 shards, merged: /"
# A shard missing, or given twice, is refused (exit 2), never merged into a partial report.
rm "$dir/shards/shard-2-of-4.json"
status=0
ci/sweep-merge.sh "$dir/shards" >/dev/null 2>"$dir/err" || status=$?
if [[ $status -ne 2 ]] || ! grep -q "2/4" "$dir/err"; then
  echo "a merge without shard 2/4 exited $status: $(cat "$dir/err")" >&2
  exit 1
fi
# A planted bug fails seeds in the shards (exit 1), and the merge lists each failing seed with its
# replay command and exits 1.
status=0
for index in 0 1; do
  ci/sweep-shard.sh "$index" 2 0..60 "$dir/buggy" --bug sync-noop >/dev/null || status=$?
done
merged=0
ci/sweep-merge.sh "$dir/buggy" >/dev/null || merged=$?
if [[ $status -ne 1 || $merged -ne 1 ]] || ! grep -q "^failed seed .*--bug sync-noop" "$dir/buggy/merged.txt"; then
  echo "a sweep with a planted bug: shards exited $status, the merge $merged" >&2
  exit 1
fi
grep '^sim:' "$dir/buggy/merged.txt" | sed "s/^/with the bug sync-noop planted, merged: /"
