#!/usr/bin/env bash
# Where a single-source get spends its time: one get of a random file from one node,
# release build, with the getter and the node sampled by perf (cpu-clock, so it works in a
# VM without hardware counters) or, when perf cannot record or CALLGRIND=1, run under
# valgrind's callgrind. Prints the top functions by self cost of each process.
#
#   bench/profile.sh               # 128 MiB (callgrind runs ~50× slower than native)
#   CALLGRIND=1 SIZE=64M bench/profile.sh
#   SIZE=256M TOP=30 bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE=${SIZE:-128M}
TOP=${TOP:-25}
BIN=${BIN:-$ROOT/target/release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p tracker -p peer
WORK=$(mktemp -d -t tessera-profile.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
trap cleanup EXIT
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"

start_tracker t
mkdir -p "$WORK/src" "$WORK/h"
head -c "$SIZE" /dev/urandom >"$WORK/src/file.bin"
new_home src
ID=$(share src "$WORK/src/file.bin")
"$BIN/peer" --home "$WORK/h/src" --tracker "$TRACKER_URL" serve --listen 127.0.0.1:0 --storage-quota 0 \
  >"$WORK/src.out" 2>"$WORK/src.log" &
NODE=$!
PIDS+=("$NODE")
wait_for "$WORK/src.out" 'serving on'
new_home getter
fresh "$WORK/out"
# perf sampling on cpu-clock when it works (it sees the kernel's share, e.g. the copy into
# the page cache); else callgrind, which counts user-space instructions only and, as
# valgrind hides SHA-NI, shows the portable SHA-256 code (several times the real cost).
if [ -z "${CALLGRIND:-}" ] && perf record -e cpu-clock -o /dev/null true 2>/dev/null; then
  perf record -e cpu-clock -g -o "$WORK/node.perf" -p "$NODE" 2>"$WORK/node.perf.log" &
  REC=$!
  sleep 0.5
  t0=$(now)
  perf record -e cpu-clock -g -o "$WORK/getter.perf" -- "$BIN/peer" --home "$WORK/h/getter" \
    --tracker "$TRACKER_URL" --quiet get -o "$WORK/out" "$ID" >/dev/null 2>"$WORK/getter.perf.log"
  say "get under perf took $(since "$t0") s"
  kill -INT "$REC"; wait "$REC" 2>/dev/null || true
  for who in getter node; do
    echo "== $who: self time by function (perf cpu-clock, ≥ 1 %)"
    perf report -i "$WORK/$who.perf" --no-inline --no-children --percent-limit 1 --stdio --sort dso,sym 2>/dev/null |
      grep -E '^ +[0-9.]+%' | awk -v n="$TOP" 'NR <= n'
  done
  cmp -s "$WORK/out/file.bin" "$WORK/src/file.bin" || die "the copy differs"
  exit 0
fi
stop_pid "$NODE"
# The node again, under callgrind (same home, so the same peer id and holdings).
: >"$WORK/src.out"
valgrind --tool=callgrind --callgrind-out-file="$WORK/node.cg" "$BIN/peer" --home "$WORK/h/src" \
  --tracker "$TRACKER_URL" serve --listen 127.0.0.1:0 --storage-quota 0 >"$WORK/src.out" 2>"$WORK/node.vg" &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 6); do grep -q 'serving on' "$WORK/src.out" 2>/dev/null && break; sleep 10; done
wait_for "$WORK/src.out" 'serving on'
t0=$(now)
valgrind --tool=callgrind --callgrind-out-file="$WORK/getter.cg" "$BIN/peer" --home "$WORK/h/getter" \
  --tracker "$TRACKER_URL" --quiet get -o "$WORK/out" "$ID" 2>"$WORK/getter.vg" >/dev/null
say "get under callgrind took $(since "$t0") s"
cmp -s "$WORK/out/file.bin" "$WORK/src/file.bin" || die "the copy differs"
kill -INT "$NODE"
wait "$NODE" 2>/dev/null || true
for who in getter node; do
  echo "== $who: self cost by function (callgrind instructions, top $TOP)"
  callgrind_annotate "$WORK/$who.cg" 2>/dev/null | grep -E '^ *[0-9,]+ ' | awk -v n="$TOP" 'NR <= n'
done
