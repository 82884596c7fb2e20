#!/usr/bin/env bash
# Runs the peer benchmark (src/main.rs says what it measures): installs what it needs from
# Debian's packages if missing (RocksDB's library and libclang for the binding generator),
# builds against Debian's RocksDB instead of compiling RocksDB's C++, and passes its arguments
# on, e.g. `bench/peers/run.sh --keys 1000000 --reps 3`.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
for pkg in librocksdb-dev libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    sudo_if_needed apt-get update -qq
    sudo_if_needed apt-get install -y -qq "${missing[@]}"
fi
ROCKSDB_LIB_DIR="$(dirname "$(find /usr/lib -name 'librocksdb.so*' -print -quit)")"
export ROCKSDB_LIB_DIR
cargo build --release --quiet
exec target/release/jadedb-peers "$@"
