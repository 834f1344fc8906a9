#!/usr/bin/env bash
# Search without a tracker, on loopback: what a flooded `peer search --peers` costs in query
# messages against the size of the network and the TTL, how many peers it reaches, and when
# its first answer arrives, beside the tracker's search (one request, one answer).
#
#   bench/flood.sh [--sizes "8 16 32"] [--ttls "2 4"] [--append]
#   bench/flood.sh --smoke      # 8 peers, TTL 2 (.ci/run)
#
# Each network is a ring plus as many random chords as peers (average degree 4), every
# node sharing one small file; nodes learn no contacts but the ones the bench adds, and the
# tracker is stopped before the flooded searches. Release build (built here), or the
# binaries in $BIN when it is set (the smoke uses the debug ones the tests built).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="8 16 32"
TTLS="2 4"
APPEND=
SMOKE=
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --ttls) TTLS=$2; shift 2 ;;
    --append) APPEND=1; shift ;;
    --smoke) SMOKE=1; SIZES=8; TTLS=2; BIN=${BIN:-target/debug}; shift ;;
    *) echo "usage: $0 [--sizes \"8 16\"] [--ttls \"2 4\"] [--append] [--smoke]" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d -t tessera-flood.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -z "${BIN:-}" ]; then
  say "building (release)"
  cargo build --release -q -p tracker -p peer
  BIN=target/release
fi
BIN=$(cd "$BIN" && pwd)

# received_total N: the query messages every node of a network of N has admitted so far.
received_total() {
  local n=$1 i sum=0 url v
  for i in $(seq 0 $((n - 1))); do
    url=$(awk '/^metrics on/ {print $3}' "$WORK/n$n-$i.out")
    v=$(curl -s "$url" | awk -F' ' '/^tessera_peer_queries_total\{outcome="received"\}/ {print $2}')
    sum=$(python3 -c "print(int(float('$sum') + float('${v:-0}')))")
  done
  echo "$sum"
}

ROWS=()
for N in $SIZES; do
  say "network of $N peers"
  start_tracker "t$N"
  TPID=$LAST_PID
  for i in $(seq 0 $((N - 1))); do
    new_home "n$N-$i"
    head -c $((1000 + i)) /dev/urandom >"$WORK/flood-$i.bin"
    peer_cmd "n$N-$i" index "$WORK/flood-$i.bin" >/dev/null 2>&1
    start_node "n$N-$i" --learn-contacts false --metrics-addr 127.0.0.1:0
    wait_for "$WORK/n$N-$i.out" 'metrics on'
  done
  addr() { awk '/serving on/ {print $NF}' "$WORK/n$N-$1.out"; }
  # A ring and N random chords (both ends know each other), from a fixed seed.
  python3 - "$N" >"$WORK/edges$N" <<'EOF'
import random, sys
n = int(sys.argv[1]); rnd = random.Random(n)
edges = {(i, (i + 1) % n) for i in range(n)}
while len(edges) < 2 * n:
    a, b = rnd.randrange(n), rnd.randrange(n)
    if a != b and (a, b) not in edges and (b, a) not in edges:
        edges.add((a, b))
for a, b in sorted(edges):
    print(a, b)
EOF
  while read -r a b; do
    peer_cmd "n$N-$a" contacts add "$(addr "$b")" >/dev/null
    peer_cmd "n$N-$b" contacts add "$(addr "$a")" >/dev/null
  done <"$WORK/edges$N"

  # The tracker's search: one request, one answer.
  t0=$(now)
  tracker_hits=$(peer_cmd "n$N-0" --json search flood | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  tracker_s=$(since "$t0")
  stop_pid "$TPID"

  for T in $TTLS; do
    reach=$(python3 - "$N" "$T" "$WORK/edges$N" <<'EOF'
import sys
n, ttl = int(sys.argv[1]), int(sys.argv[2])
adj = {i: set() for i in range(n)}
for line in open(sys.argv[3]):
    a, b = map(int, line.split()); adj[a].add(b); adj[b].add(a)
dist = {0: 0}; q = [0]
for x in q:
    for y in adj[x]:
        if y not in dist:
            dist[y] = dist[x] + 1; q.append(y)
print(sum(1 for i, d in dist.items() if 0 < d <= ttl))
EOF
)
    before=$(received_total "$N")
    out=$(peer_cmd "n$N-0" --json search --peers flood --ttl "$T" --wait 2s 2>"$WORK/search.err")
    after=$(received_total "$N")
    hits=$(echo "$out" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    first=$(sed -n 's/.*first answer after \([0-9]*\) ms.*/\1/p' "$WORK/search.err")
    msgs=$((after - before))
    [ "$hits" = "$reach" ] || die "N=$N TTL=$T: $hits answers, $reach peers within reach"
    ROWS+=("| $N | $T | $reach | $hits | $msgs | ${first:-?} ms | 1 request: $tracker_hits files in $(python3 -c "print(round($tracker_s*1000))") ms (with process start) |")
    say "N=$N TTL=$T: reached $hits of $reach, $msgs messages, first answer ${first:-?} ms"
  done
  # This network's nodes go before the next one starts.
  cleanup_nodes=("${PIDS[@]}")
  for p in "${cleanup_nodes[@]}"; do stop_pid "$p"; done
  PIDS=()
done

{
  echo
  echo "## Search without a tracker (loopback): run of $(date -u '+%Y-%m-%d %H:%M') UTC (\`bench/flood.sh\`)"
  echo
  echo "Load average before the run: $LOAD_AT_START. Ring plus N random chords (average degree 4); the tracker stopped before the flooded searches."
  echo
  echo "| peers | TTL | peers within TTL hops | answered | query messages | first answer | the tracker's search, same network |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$WORK/table.md"
cat "$WORK/table.md"
if [ -n "$APPEND" ] && [ -z "$SMOKE" ]; then
  cat "$WORK/table.md" >>BENCHMARKS.md
  say "appended to BENCHMARKS.md"
fi
