#!/usr/bin/env bash
# Time for a freshly indexed file to reach N live copies of every chunk on a few peers,
# all on 127.0.0.1. Release build; prints one line of figures.
#
#   bench/replication.sh                     # 256 MiB, 5 peers, N = 3
#   SIZE=1G PEERS=5 N=3 bench/replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-256M}
PEERS=${PEERS:-5}
N=${N:-3}
BIN=${BIN:-$PWD/target/release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p tracker -p peer
WORK=$(mktemp -d -t tessera-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/tracker" --listen 127.0.0.1:0 --database-url "sqlite://$WORK/t.db?mode=rwc" --replication "$N" \
  >"$WORK/t.out" 2>"$WORK/t.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$WORK/t.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '/listening on/ {print $NF}' "$WORK/t.out")
export PEER_TRACKER=$URL
for i in $(seq 0 $((PEERS - 1))); do
  echo "bench-pw" | "$BIN/peer" --home "$WORK/p$i" register --user "p$i" --password-stdin >/dev/null
  "$BIN/peer" --home "$WORK/p$i" serve --listen 127.0.0.1:0 --storage-quota 100G >"$WORK/p$i.out" 2>"$WORK/p$i.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'serving on' "$WORK/p$i.out" 2>/dev/null && break; sleep 0.1; done
done
head -c "$SIZE" /dev/urandom >"$WORK/file.bin"
cat "$WORK/file.bin" >/dev/null

stats() { python3 -c 'import json,sys,urllib.request as u; s=json.load(u.urlopen(sys.argv[1]+"/api/v1/stats")); print(s["under_replicated_chunks"], s["pending_tasks"], s["chunks"])' "$URL"; }
t0=$(date +%s.%N)
"$BIN/peer" --home "$WORK/p0" index "$WORK/file.bin" >/dev/null
t1=$(date +%s.%N)
while :; do
  read -r under pending chunks < <(stats)
  [ "$under" = 0 ] && [ "$pending" = 0 ] && [ "$chunks" != 0 ] && break
  sleep 0.05
done
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$SIZE" "$PEERS" "$N" "$chunks" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:4])
size, peers, n, chunks = sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
print(f"replication: {size} ({chunks} chunks), {peers} peers, N={n}: index {t1-t0:.2f} s, "
      f"then every chunk at N live copies after {t2-t1:.2f} s (total {t2-t0:.2f} s)")
PY
