#!/usr/bin/env bash
# Single-source throughput on 127.0.0.1: one tracker, one node (`peer serve`) sharing a
# random file, one `peer get` of it into an empty directory. In the same run, for ratios:
# `peer index` of the file vs `openssl dgst -sha256`, and curl from a local HTTP server
# (nginx if installed, else python3 -m http.server) into a new file, and rqbit seeding to
# rqbit through a local opentracker when rqbit, mktorrent, aria2c and opentracker are
# installed. With BASE (another build's directory of binaries), the node and getter of that
# build are timed too, alternating with this build's run by run, for a before/after ratio.
# Release build; prints one line of figures.
#
#   bench/single_source.sh                   # 1 GiB, 3 runs of each, best kept
#   SIZE=2G RUNS=1 bench/single_source.sh
#   SKIP_BUILD=1 BIN=/path/to/release bench/single_source.sh
#   BASE=/path/to/old/release SKIP_INDEX=1 SKIP_RQBIT=1 bench/single_source.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
BIN=${BIN:-$PWD/target/release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p tracker -p peer
WORK=$(mktemp -d -t tessera-single.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
# Deleting a big file costs time on some mounts: do it (and sync) before a timer starts.
fresh() { rm -rf "$1"; sync; mkdir -p "$1"; }

"$BIN/tracker" --listen 127.0.0.1:0 --database-url "sqlite://$WORK/t.db?mode=rwc" \
  >"$WORK/t.out" 2>"$WORK/t.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$WORK/t.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '/listening on/ {print $NF}' "$WORK/t.out")
export PEER_TRACKER=$URL
echo "bench-pw" | "$BIN/peer" --home "$WORK/p0" register --user p0 --password-stdin >/dev/null
NODE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# start_node DIR: the node of the binaries in DIR, on one fixed port, so a node of another
# build in the same home is the same holder at the same address.
start_node() {
  : >"$WORK/p0.out"
  "$1/peer" --home "$WORK/p0" serve --listen "127.0.0.1:$NODE_PORT" >"$WORK/p0.out" 2>>"$WORK/p0.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  for _ in $(seq 100); do grep -q 'serving on' "$WORK/p0.out" 2>/dev/null && break; sleep 0.1; done
}
stop_node() { kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; }
start_node "$BIN"

mkdir -p "$WORK/src"
head -c "$SIZE" /dev/urandom >"$WORK/src/file.bin"
BYTES=$(stat -c %s "$WORK/src/file.bin")
cat "$WORK/src/file.bin" >/dev/null

best() { sort -g | head -1; }
# Hashing: openssl vs `peer index` (best of RUNS); the node's home must index the file.
IRUNS=$RUNS
[ -z "${SKIP_INDEX:-}" ] || IRUNS=1
OSSL=$(for _ in $(seq "$IRUNS"); do
  t0=$(now); openssl dgst -sha256 "$WORK/src/file.bin" >/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc -l; done | best)
# The node's home first (it then shares the file), then a new home each run: a home skips
# files it has already indexed unchanged.
INDEX=$(for run in $(seq "$IRUNS"); do
  H=$WORK/p0
  if [ "$run" != 1 ]; then
    H=$WORK/i$run
    echo "bench-pw" | "$BIN/peer" --home "$H" register --user "i$run" --password-stdin >/dev/null
  fi
  t0=$(now); "$BIN/peer" --home "$H" index "$WORK/src/file.bin" >/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc -l; done | best)

# HTTP reference: curl into a new file, from nginx when it is installed (a fast server),
# else from python's http.server (much slower: compare with care).
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  HTTPD=nginx
  mkdir -p "$WORK/nginx"
  # As root, nginx's worker would drop to nobody, who cannot read the 0700 temp dir.
  USER_LINE=""; [ "$(id -u)" != 0 ] || USER_LINE="user root;"
  cat >"$WORK/nginx/nginx.conf" <<NGX
$USER_LINE
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$HTTP_PORT; root $WORK/src; }
}
NGX
  "$(command -v nginx || echo /usr/sbin/nginx)" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/stderr" &
else
  HTTPD=python
  python3 -m http.server --bind 127.0.0.1 --directory "$WORK/src" "$HTTP_PORT" >/dev/null 2>&1 &
fi
PIDS+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/file.bin" -r 0-0 && break; sleep 0.1; done
CURL=$(for _ in $(seq "$RUNS"); do
  fresh "$WORK/curl"
  t0=$(now); curl -sf -o "$WORK/curl/file.bin" "http://127.0.0.1:$HTTP_PORT/file.bin"; t1=$(now)
  echo "$t1 - $t0" | bc -l; done | best)
rm -rf "$WORK/curl"

# Tessera: peer get from the one node (peak RSS of getter and node via /proc); with BASE,
# that build's node and getter in turn.
# timed_get DIR RUN: seconds of one get with the binaries in DIR into a new home.
timed_get() {
  fresh "$WORK/out"
  # A new getter each run, so nothing is already held.
  echo "bench-pw" | "$1/peer" --home "$WORK/g$2" register --user "g$2" --password-stdin >/dev/null
  local t0 t1
  t0=$(now)
  /usr/bin/time -f '%M' -o "$WORK/rss" "$1/peer" --home "$WORK/g$2" get -o "$WORK/out" file.bin >/dev/null 2>"$WORK/get.err" || { cat "$WORK/get.err" >&2; exit 1; }
  t1=$(now)
  cmp -s "$WORK/out/file.bin" "$WORK/src/file.bin" || { echo "downloaded file differs" >&2; cat "$WORK/get.err" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}
GET=""; GET_RSS=0; BASE_GET=""
for run in $(seq "$RUNS"); do
  t=$(timed_get "$BIN" "$run")
  if [ -z "$GET" ] || [ "$(echo "$t < $GET" | bc -l)" = 1 ]; then GET=$t; fi
  r=$(cat "$WORK/rss")
  if [ "$r" -gt "$GET_RSS" ]; then GET_RSS=$r; fi
  if [ -n "${BASE:-}" ]; then
    SERVE_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
    stop_node; start_node "$BASE"
    t=$(timed_get "$BASE" "b$run")
    if [ -z "$BASE_GET" ] || [ "$(echo "$t < $BASE_GET" | bc -l)" = 1 ]; then BASE_GET=$t; fi
    stop_node; start_node "$BIN"
  fi
done
[ -n "${BASE:-}" ] || SERVE_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
rm -rf "$WORK/out"

# rqbit seeding to rqbit through a local opentracker (Debian's build serves only
# whitelisted info hashes, and reads the whitelist after chrooting into its rootdir).
RQBIT=""
if [ -z "${SKIP_RQBIT:-}" ] && command -v rqbit >/dev/null && command -v mktorrent >/dev/null &&
  command -v aria2c >/dev/null && command -v opentracker >/dev/null; then
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  OT=$WORK/ot; OT_PORT=$(free_port)
  mkdir -p "$OT" "$WORK/rq"
  mktorrent -a "http://127.0.0.1:$OT_PORT/announce" -l 20 -t 2 -o "$WORK/rq/f.torrent" "$WORK/src/file.bin" >/dev/null
  IH=$(aria2c -S "$WORK/rq/f.torrent" | awk '/^Info Hash:/ {print $3}')
  echo "$IH" >"$OT/whitelist.txt"
  printf 'tracker.rootdir %s\naccess.whitelist /whitelist.txt\n' "$OT" >"$OT/opentracker.conf"
  opentracker -f "$OT/opentracker.conf" -i 127.0.0.1 -p "$OT_PORT" -P "$OT_PORT" -A 127.0.0.1 >"$WORK/ot.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$OT_PORT/stats" && break; sleep 0.1; done
  RQ=(rqbit --disable-dht --disable-dht-persistence --disable-lsd --disable-upnp-port-forward --listen-ip 127.0.0.1)
  SEED_PORT=$(free_port)
  "${RQ[@]}" --listen-port "$SEED_PORT" --announce-port "$SEED_PORT" download --disable-http-api \
    --overwrite -o "$WORK/src" "$WORK/rq/f.torrent" >"$WORK/rq/seed.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do grep -q 'Initial check results' "$WORK/rq/seed.log" && break; sleep 0.1; done
  for r in $(seq "$RUNS"); do
    fresh "$WORK/rq/out"
    p=$(free_port)
    t0=$(now)
    "${RQ[@]}" --listen-port "$p" --announce-port "$p" download --disable-http-api -e \
      -o "$WORK/rq/out" "$WORK/rq/f.torrent" >"$WORK/rq/leech$r.log" 2>&1 || { tail -3 "$WORK/rq/leech$r.log" >&2; exit 1; }
    t1=$(now)
    cmp -s "$WORK/rq/out/file.bin" "$WORK/src/file.bin" || { echo "rqbit's copy differs" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$RQBIT" ] || [ "$(echo "$t < $RQBIT" | bc -l)" = 1 ]; then RQBIT=$t; fi
  done
  rm -rf "$WORK/rq/out"
fi

python3 - "$BYTES" "$GET" "$CURL" "$INDEX" "$OSSL" "$GET_RSS" "$SERVE_RSS" "$HTTPD" "$RQBIT" "$BASE_GET" <<'PY'
import sys
b = int(sys.argv[1]); get, curl, index, ossl = map(float, sys.argv[2:6])
grss, srss = int(sys.argv[6]) / 1024, int(sys.argv[7]) / 1024
httpd, rqbit, base = sys.argv[8], sys.argv[9], sys.argv[10]
gb = lambda t: b / t / 1e9
line = (f"single-source {b/2**30:.2f} GiB: get {get:.2f} s ({gb(get):.2f} GB/s, getter RSS {grss:.0f} MiB, "
        f"node RSS {srss:.0f} MiB) | curl from {httpd} {curl:.2f} s ({gb(curl):.2f} GB/s, get/curl rate {curl/get:.2f})")
if rqbit:
    line += f" | rqbit->rqbit {float(rqbit):.2f} s ({gb(float(rqbit)):.2f} GB/s, get/rqbit rate {float(rqbit)/get:.2f})"
if base:
    line += f" | base build {float(base):.2f} s ({gb(float(base)):.2f} GB/s, get/base rate {float(base)/get:.2f})"
line += f" | index {index:.2f} s vs openssl {ossl:.2f} s (index rate = {ossl/index:.2f} x openssl)"
print(line)
PY
