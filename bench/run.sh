#!/usr/bin/env bash
# The benchmark suite: Tessera beside real BitTorrent peers, an HTTP server and openssl,
# measured on this machine in one run, on 127.0.0.1 only. Prints one table of figures,
# ratios and the targets of the speed issue; `--append` adds it to BENCHMARKS.md with a
# description of the machine.
#
#   bench/run.sh                   # full suite, 2 GiB; installs what is missing
#   bench/run.sh --smoke           # 64 MiB, Tessera only, debug build: a few seconds (CI)
#   bench/run.sh --size 1G --append
#
# Knobs (environment): RUNS (best of N for single-source and hashing; 2, smoke 1),
# MULTI_SIZE / MULTI_RATE (multi-source file and per-source cap), SWARM_SIZE / SWARM_RATE /
# SWARM_GETTERS, LOAD_FILES / LOAD_PEERS / LOAD_SECONDS (tracker load), SKIP_BUILD=1 and
# BIN=DIR (measure prebuilt binaries), KEEP_WORK=1 (keep the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE= APPEND= SIZE=
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1 ;;
    --append) APPEND=1 ;;
    --size) SIZE=$2; shift ;;
    --size=*) SIZE=${1#--size=} ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/run.sh [--smoke] [--size SIZE] [--append]" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$SMOKE" ]; then
  SIZE=${SIZE:-64M} RUNS=${RUNS:-1} PROFILE=debug
  MULTI_SIZE=${MULTI_SIZE:-$SIZE} MULTI_RATE=${MULTI_RATE:-100M}
  SWARM_SIZE=${SWARM_SIZE:-32M} SWARM_RATE=${SWARM_RATE:-40M}
  LOAD_FILES=${LOAD_FILES:-500} LOAD_PEERS=${LOAD_PEERS:-20} LOAD_SECONDS=${LOAD_SECONDS:-1}
else
  SIZE=${SIZE:-2G} RUNS=${RUNS:-2} PROFILE=release
  MULTI_SIZE=${MULTI_SIZE:-1G} MULTI_RATE=${MULTI_RATE:-50M}
  SWARM_SIZE=${SWARM_SIZE:-512M} SWARM_RATE=${SWARM_RATE:-25M}
  LOAD_FILES=${LOAD_FILES:-100000} LOAD_PEERS=${LOAD_PEERS:-1000} LOAD_SECONDS=${LOAD_SECONDS:-10}
fi
SWARM_GETTERS=${SWARM_GETTERS:-8}
BIN=${BIN:-$ROOT/target/$PROFILE}

WORK=$(mktemp -d -t tessera-bench.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# shellcheck source=bench/tracker_load.sh
. "$ROOT/bench/tracker_load.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM
put size "$SIZE"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
put smoke "${SMOKE:-0}"

# The reference tools are needed whether or not the binaries are prebuilt.
[ -n "$SMOKE" ] || install_tools
if [ -z "${SKIP_BUILD:-}" ]; then
  say "building ($PROFILE)"
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" --quiet -p tracker -p peer
  cargo build "${flag[@]}" --quiet -p tracker --example load
fi
LOAD=$BIN/examples/load
# Prebuilt binaries must include the load client: say so now, not after the other parts.
for b in "$BIN/peer" "$BIN/tracker" "$LOAD"; do
  [ -x "$b" ] || die "$b is missing (build it, or run without SKIP_BUILD)"
done

start_tracker t
SRC=$WORK/src/file.bin
mkdir -p "$WORK/src" "$WORK/h"
say "writing a $SIZE random file"
head -c "$SIZE" /dev/urandom >"$SRC"
BYTES=$(stat -c %s "$SRC")
put bytes "$BYTES"
cat "$SRC" >/dev/null

# --- Hashing: `peer index` vs `openssl dgst -sha256`, one file and 16 files of 1/16 the size.
say "hashing"
mkdir -p "$WORK/folder"
split -n 16 -d -a 2 "$SRC" "$WORK/folder/part"
cat "$WORK/folder"/* >/dev/null
for what in file folder; do
  target=$SRC; [ $what = folder ] && target=$WORK/folder
  o=$(for _ in $(seq "$RUNS"); do
    t0=$(now); if [ $what = file ]; then openssl dgst -sha256 "$target" >/dev/null
    else openssl dgst -sha256 "$target"/* >/dev/null; fi; since "$t0"; done | best)
  i=$(for r in $(seq "$RUNS"); do
    new_home "ix-$what-$r"
    t0=$(now); peer_cmd "ix-$what-$r" index "$target" >/dev/null; since "$t0"; done | best)
  put "openssl_$what" "$o"
  put "index_$what" "$i"
done

# --- Single source: one node serves the file, a new peer gets it into an empty dir.
say "single source: peer -> peer"
new_home src0
SRC_ID=$(share src0 "$SRC")
start_node src0
NODE_PID=$LAST_PID
GET=; GET_RSS=0
for r in $(seq "$RUNS"); do
  read -r t rss _ < <(timed_get "single-$r" "$SRC_ID" "$SRC" "$WORK/out")
  if [ -z "$GET" ] || [ "$(echo "$t < $GET" | bc -l)" = 1 ]; then GET=$t; fi
  [ "$rss" -gt "$GET_RSS" ] && GET_RSS=$rss
done
rm -rf "$WORK/out"
put get_single "$GET"
put rss_getter_kib "$GET_RSS"
put rss_node_kib "$(peak_rss "$NODE_PID")"
stop_pid "$NODE_PID"

if [ -z "$SMOKE" ]; then
  # curl from nginx (python's http.server when nginx is missing: much slower) into a new file.
  say "single source: curl from a local HTTP server"
  HTTP_PORT=$(free_port)
  if NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null); then
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
    "$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/stderr" &
  else
    HTTPD=python
    python3 -m http.server --bind 127.0.0.1 --directory "$WORK/src" "$HTTP_PORT" >/dev/null 2>&1 &
  fi
  HTTP_PID=$!
  PIDS+=("$HTTP_PID")
  for _ in $(seq 100); do curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$HTTP_PORT/file.bin" && break; sleep 0.1; done
  CURL=$(for _ in $(seq "$RUNS"); do
    fresh "$WORK/curl"
    t0=$(now); curl -sf -o "$WORK/curl/file.bin" "http://127.0.0.1:$HTTP_PORT/file.bin"; since "$t0"
  done | best)
  cmp -s "$WORK/curl/file.bin" "$SRC" || die "curl's copy differs"
  rm -rf "$WORK/curl"
  stop_pid "$HTTP_PID"
  put curl "$CURL"
  put httpd "$HTTPD"

  # rqbit seeding to rqbit through a local opentracker.
  say "single source: rqbit -> rqbit through opentracker"
  OT_PORT=$(free_port)
  mkdir -p "$WORK/rq"
  mktorrent -a "http://127.0.0.1:$OT_PORT/announce" -l 20 -t 2 -o "$WORK/rq/f.torrent" "$SRC" >/dev/null
  IH=$(aria2c -S "$WORK/rq/f.torrent" | awk '/^Info Hash:/ {print $3}')
  start_opentracker "$OT_PORT" "$IH"
  RQ=(rqbit --disable-dht --disable-dht-persistence --disable-lsd --disable-upnp-port-forward --listen-ip 127.0.0.1)
  SEED_PORT=$(free_port)
  "${RQ[@]}" --listen-port "$SEED_PORT" --announce-port "$SEED_PORT" download --disable-http-api \
    --overwrite -o "$WORK/src" "$WORK/rq/f.torrent" >"$WORK/rq/seed.log" 2>&1 &
  RQ_SEED=$!
  PIDS+=("$RQ_SEED")
  for _ in $(seq 600); do grep -q 'Initial check results' "$WORK/rq/seed.log" && break; sleep 0.1; done
  grep -q 'Initial check results' "$WORK/rq/seed.log" || die "rqbit seeder did not start: $(tail -3 "$WORK/rq/seed.log")"
  RQBIT=$(for r in $(seq "$RUNS"); do
    fresh "$WORK/rq/out"
    p=$(free_port)
    t0=$(now)
    "${RQ[@]}" --listen-port "$p" --announce-port "$p" download --disable-http-api -e \
      -o "$WORK/rq/out" "$WORK/rq/f.torrent" >"$WORK/rq/leech$r.log" 2>&1 ||
      die "rqbit leecher failed: $(tail -3 "$WORK/rq/leech$r.log")"
    since "$t0"
    cmp -s "$WORK/rq/out/file.bin" "$SRC" || die "rqbit's copy differs"
  done | best)
  rm -rf "$WORK/rq/out"
  stop_pid "$RQ_SEED"
  put rqbit "$RQBIT"

  # opentracker's HTTP announce rate under wrk (the hash is whitelisted above).
  ot_announce "$OT_PORT" "$IH"
fi

# --- Multi-source: 1, 2 and 4 nodes sharing the same file, each capped at MULTI_RATE.
say "multi-source: 1, 2, 4 sources at $MULTI_RATE each"
MSRC=$WORK/msrc/multi.bin
mkdir -p "$WORK/msrc"
head -c "$MULTI_SIZE" "$SRC" >"$MSRC"
put multi_bytes "$(stat -c %s "$MSRC")"
put multi_rate "$MULTI_RATE"
MULTI_PIDS=()
for k in 1 2 4; do
  while [ ${#MULTI_PIDS[@]} -lt $k ]; do
    n=m${#MULTI_PIDS[@]}
    new_home "$n"
    MULTI_ID=$(share "$n" "$MSRC")
    start_node "$n" --max-upload-rate "$MULTI_RATE"
    MULTI_PIDS+=("$LAST_PID")
  done
  read -r t _ sources < <(timed_get "multi-$k" "$MULTI_ID" "$MSRC" "$WORK/out")
  [ "$sources" = "$k" ] || die "multi-source get from $k nodes used $sources sources"
  put "multi_$k" "$t"
done
for p in "${MULTI_PIDS[@]}"; do stop_pid "$p"; done
rm -rf "$WORK/out"

# --- Swarm: 1 seed + N getters starting together, every node capped at SWARM_RATE; each
# getter's home also runs `peer serve`, so it serves what it holds while it downloads
# (bench/swarm.sh, which also runs alone).
# shellcheck source=bench/swarm.sh
. "$ROOT/bench/swarm.sh"
swarm_bench "$SRC" >/dev/null

# --- Tracker: Locate (1,000-chunk files) and Search under 64 requests in flight, against
# a tracker holding LOAD_FILES files and LOAD_PEERS heartbeating peers; its memory after.
tracker_load

python3 "$ROOT/bench/table.py" "$RES" >"$WORK/table.md"
cat "$WORK/table.md"
if [ -n "$APPEND" ]; then
  {
    echo
    echo "## Run of $(date -u '+%Y-%m-%d %H:%M UTC') (\`bench/run.sh${SMOKE:+ --smoke} --size $SIZE\`)"
    echo
    machine
    echo
    cat "$WORK/table.md"
  } >>"$ROOT/BENCHMARKS.md"
  say "appended to BENCHMARKS.md"
fi
