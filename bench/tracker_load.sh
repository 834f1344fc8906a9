#!/usr/bin/env bash
# The tracker's request rates beside opentracker's, measured in one run: opentracker's HTTP
# announce under wrk, then Tessera's Locate (1,000-chunk files) and Search under 64 requests
# in flight against a tracker holding LOAD_FILES files and LOAD_PEERS heartbeating peers.
# bench/run.sh sources this file for its functions; run alone, it measures only these two.
#
#   bench/tracker_load.sh                        # 100k files, 1k peers, 10 s each, release
#   LOAD_FILES=10000 bench/tracker_load.sh       # quicker, for iterating
#
# Knobs (environment): LOAD_FILES / LOAD_PEERS / LOAD_SECONDS, LOAD_OPS (default
# "locate search"), SKIP_BUILD=1 and BIN=DIR, KEEP_WORK=1 (keep the temp dir, with the
# tracker's log and the load client's JSON lines).

# start_opentracker PORT IH: opentracker on 127.0.0.1:PORT serving the one info hash IH
# (Debian's build serves only whitelisted hashes, and reads the whitelist after chrooting
# into its rootdir).
start_opentracker() {
  local ot=$WORK/ot
  mkdir -p "$ot"
  echo "$2" >"$ot/whitelist.txt"
  printf 'tracker.rootdir %s\naccess.whitelist /whitelist.txt\n' "$ot" >"$ot/opentracker.conf"
  opentracker -f "$ot/opentracker.conf" -i 127.0.0.1 -p "$1" -P "$1" -A 127.0.0.1 \
    >"$WORK/ot.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/stats" && return 0
    sleep 0.1
  done
  die "opentracker did not start: $(tail -3 "$WORK/ot.log")"
}

# ot_announce PORT IH: opentracker's HTTP announce rate under wrk (2 threads, 64
# connections) for LOAD_SECONDS.
ot_announce() {
  local qih
  qih=$(echo "$2" | sed 's/../%&/g')
  say "opentracker announce under wrk"
  wrk -t 2 -c 64 -d "${LOAD_SECONDS}s" --latency \
    "http://127.0.0.1:$1/announce?info_hash=$qih&peer_id=-BE0001-000000000000&port=6881&uploaded=0&downloaded=0&left=0&compact=1" \
    >"$WORK/wrk.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk.out")"
  put ot_rps "$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")"
  put ot_p50 "$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out")"
  put ot_p99 "$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
}

# tracker_load: a new tracker filled by the load client ($LOAD), then Locate and Search
# (LOAD_OPS) under 64 requests in flight; records the rates, latencies and peak memory.
tracker_load() {
  local ops=() op tracker
  for op in ${LOAD_OPS:-locate search}; do ops+=(--op "$op"); done
  say "tracker load: $LOAD_FILES files, $LOAD_PEERS peers"
  # The load client puts many peers and files on a few accounts: past the per-user limits.
  start_tracker load --max-peers-per-user 1000000 --max-files-per-user 10000000 \
    --max-chunks-per-user 1000000000
  tracker=$LAST_PID
  local hot=64
  "$LOAD" --tracker "$TRACKER_URL" --files $((LOAD_FILES - hot)) --chunks 1 --hot-files $hot \
    --hot-chunks 1000 --peers "$LOAD_PEERS" --holders 2 "${ops[@]}" \
    --concurrency 64 --duration "${LOAD_SECONDS}s" >"$WORK/load.json" 2>"$WORK/load.err" ||
    die "load client failed: $(tail -3 "$WORK/load.err")"
  python3 - "$WORK/load.json" >>"$RES" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["op"] == "populate":
        print("populate_s", d["seconds"])
    else:
        if d["errors"]:
            sys.exit(f"{d['op']}: {d['errors']} errors")
        for k in ("rps", "p50_ms", "p99_ms"):
            print(f"{d['op']}_{k}", d[k])
PY
  put rss_tracker_kib "$(peak_rss "$tracker")"
  stop_pid "$tracker"
}

# Run alone: opentracker with one made-up info hash, then the tracker; prints the figures
# and the ratio of Locate to announce.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  ROOT=$PWD
  LOAD_FILES=${LOAD_FILES:-100000} LOAD_PEERS=${LOAD_PEERS:-1000} LOAD_SECONDS=${LOAD_SECONDS:-10}
  BIN=${BIN:-$ROOT/target/release}
  LOAD=$BIN/examples/load
  WORK=$(mktemp -d -t tessera-load.XXXXXX)
  RES=$WORK/results
  # shellcheck source=bench/lib.sh
  . "$ROOT/bench/lib.sh"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  for c in opentracker wrk; do command -v $c >/dev/null || die "$c is not installed"; done
  if [ -z "${SKIP_BUILD:-}" ]; then
    say "building (release)"
    cargo build --release --quiet -p tracker --bin tracker --example load
  fi
  OT_PORT=$(free_port)
  IH=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
  start_opentracker "$OT_PORT" "$IH"
  ot_announce "$OT_PORT" "$IH"
  tracker_load
  [ -n "${KEEP_WORK:-}" ] && say "kept $WORK"
  cat "$RES"
  awk '$1 == "ot_rps" {o = $2} $1 == "locate_rps" {l = $2}
       END {if (o > 0 && l > 0) printf "locate/announce %.2f\n", l / o}' "$RES"
fi
