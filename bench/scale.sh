#!/usr/bin/env bash
# Scale simulation (issue: scale-out): a tracker holding SCALE_PEERS peers and SCALE_FILES
# files of SCALE_CHUNKS chunks each, measured with the load client's Locate loop (64 in
# flight) on SQLite and, when a server answers, on PostgreSQL (a fresh database per run).
# Prints per backend: populate time, tracker peak RSS, and rps / p50 / p99 of a getter's
# first Locate (with the manifest) and of its repeated one (holders and ticket only).
#
#   bench/scale.sh                    10k peers, 1,000 files x 1,000 chunks (1M chunks)
#   SCALE_PEERS=1000 SCALE_FILES=100 bench/scale.sh      a quick run
#   SCALE_PG_URL=postgres://… bench/scale.sh              another PostgreSQL server
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${SCALE_PEERS:-10000}
FILES=${SCALE_FILES:-1000}
CHUNKS=${SCALE_CHUNKS:-1000}
SECONDS_RUN=${SCALE_SECONDS:-15s}
PG_URL=${SCALE_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
WORK=$(mktemp -d)
BIN=target/release
source bench/lib.sh
trap cleanup EXIT

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p tracker --bin tracker --example load

# run_backend NAME DATABASE_URL
run_backend() {
  local name=$1 url=$2
  # Many peers on 50 accounts: past the per-user limits.
  "$BIN/tracker" --listen 127.0.0.1:0 --database-url "$url" --replication 1 --peer-timeout 2m \
    --max-peers-per-user 1000000 --max-files-per-user 10000000 --max-chunks-per-user 1000000000 \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_for "$WORK/$name.out" 'listening on'
  local url_t
  url_t=$(awk '/listening on/ {print $NF}' "$WORK/$name.out")
  local t0
  t0=$(now)
  "$BIN/examples/load" --tracker "$url_t" --files "$FILES" --chunks "$CHUNKS" --peers "$PEERS" \
    --users 50 --holders 2 --populate-concurrency 128 >"$WORK/$name.populate" 2>&1
  local populate
  populate=$(since "$t0")
  "$BIN/examples/load" --tracker "$url_t" --files "$FILES" --chunks "$CHUNKS" --peers "$PEERS" \
    --users 50 --holders 2 --skip-populate --op locate --op relocate --concurrency 64 \
    --duration "$SECONDS_RUN" >"$WORK/$name.locate" 2>&1
  local rss
  rss=$(peak_rss "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$name" "$populate" "$rss" "$WORK/$name.locate" <<'EOF'
import json, sys
name, populate, rss, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = [json.loads(l) for l in open(path) if l.startswith("{")]
print(f"{name:<10} populate {populate:6.1f} s   tracker peak RSS {rss / 1024:6.0f} MiB")
for op in ("locate", "relocate"):
    m = [l for l in lines if l.get("op") == op][-1]
    print(f"{name:<10} {op:<9} {m['rps']:8.0f} req/s   p50 {m['p50_ms']:6.2f} ms   "
          f"p99 {m['p99_ms']:6.2f} ms   errors {m['errors']}")
EOF
}

say "scale: $PEERS peers, $FILES files x $CHUNKS chunks"
run_backend sqlite "sqlite://$WORK/scale.db?mode=rwc"
if pg_isready -q -d "$PG_URL" 2>/dev/null; then
  DB=tessera_scale_$$
  psql -q "$PG_URL" -c "CREATE DATABASE $DB" >/dev/null
  run_backend postgres "${PG_URL%/*}/$DB" || true
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
else
  say "no PostgreSQL server at $PG_URL: SQLite only"
fi
