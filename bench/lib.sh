# Helpers for bench/run.sh (sourced, not run): processes it starts, timing, result records.
# Every process started here is recorded in PIDS and killed by pid on exit.

PIDS=()
LAST_PID=

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "${KEEP_WORK:-}" ] && rm -rf "$WORK"
  return 0
}

say() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
# Seconds between two `now`s.
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
# The smallest of several numbers on stdin.
best() { sort -g | head -1; }
# Deleting a big file costs time on some mounts: do it (and sync) before a timer starts.
fresh() { rm -rf "$1"; sync; mkdir -p "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Peak resident set of a running process, KiB.
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Records one figure for the table: `put key value`.
put() { echo "$1 $2" >>"$RES"; }

# Waits until FILE contains PATTERN (up to 20 s).
wait_for() {
  local i
  for i in $(seq 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "timed out waiting for '$2' in $1: $(tail -3 "$1" "${1%.out}.log" 2>/dev/null)"
}

# start_tracker NAME [tracker flags…]: a tracker with its own SQLite file; sets TRACKER_URL.
start_tracker() {
  local name=$1
  shift
  "$BIN/tracker" --listen 127.0.0.1:0 --database-url "sqlite://$WORK/$name.db?mode=rwc" \
    --replication 1 "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_for "$WORK/$name.out" 'listening on'
  TRACKER_URL=$(awk '/listening on/ {print $NF}' "$WORK/$name.out")
}

# new_home NAME: registers user NAME with home $WORK/h/NAME on $TRACKER_URL.
new_home() {
  echo "bench-pw" | "$BIN/peer" --home "$WORK/h/$1" --tracker "$TRACKER_URL" \
    register --user "$1" --password-stdin >/dev/null
}

# peer_cmd NAME ARGS…: runs the peer binary in home NAME.
peer_cmd() {
  local name=$1
  shift
  "$BIN/peer" --home "$WORK/h/$name" --tracker "$TRACKER_URL" --quiet "$@"
}

# start_node NAME [serve flags…]: runs `peer serve` in home NAME; sets LAST_PID. Nodes never
# host replicas here (quota 0), so replication cannot take bandwidth from a measurement.
start_node() {
  local name=$1
  shift
  "$BIN/peer" --home "$WORK/h/$name" --tracker "$TRACKER_URL" serve --listen 127.0.0.1:0 \
    --storage-quota 0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_for "$WORK/$name.out" 'serving on'
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# share NAME PATH: `peer index` of PATH in home NAME; prints the file id.
share() {
  peer_cmd "$1" --json index "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'
}

# timed_get NAME ID FILE OUTDIR: a `peer get` of ID into an empty OUTDIR by a new user NAME;
# prints "seconds peak_rss_kib sources" and checks the copy byte for byte against FILE (by
# id, since two test files with the same bytes are one file to the tracker).
timed_get() {
  local name=$1 id=$2 src=$3 out=$4 t0 t
  new_home "$name"
  fresh "$out"
  t0=$(now)
  /usr/bin/time -f '%M' -o "$WORK/$name.rss" \
    "$BIN/peer" --home "$WORK/h/$name" --tracker "$TRACKER_URL" --json get -o "$out" \
    "$id" >"$WORK/$name.json" 2>"$WORK/$name.err" ||
    die "peer get failed: $(cat "$WORK/$name.err")"
  t=$(since "$t0")
  local got
  got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["path"])' "$WORK/$name.json")
  cmp -s "$got" "$src" || die "$name: downloaded file differs from $src"
  echo "$t $(tail -1 "$WORK/$name.rss") $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["sources"])' "$WORK/$name.json")"
}

# Installs the reference tools that are missing (Debian/Ubuntu apt; rqbit with cargo).
install_tools() {
  local need=() c
  for c in opentracker:opentracker mktorrent:mktorrent aria2c:aria2 nginx:nginx-light \
    wrk:wrk openssl:openssl curl:curl bc:bc; do
    command -v "${c%%:*}" >/dev/null || [ -x "/usr/sbin/${c%%:*}" ] || need+=("${c##*:}")
  done
  [ -x /usr/bin/time ] || need+=(time)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ! command -v rqbit >/dev/null; then
    say "installing rqbit (cargo install rqbit --locked; several minutes)"
    cargo install rqbit --locked --quiet
  fi
}

# Describes this machine in one Markdown table.
machine() {
  local model flags
  model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  flags=$(grep -m1 -ow -E 'sha_ni|avx2|avx512f|aes' /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| CPU | $(nproc) cores, $model; flags: ${flags:-none of sha_ni/avx2/aes} |"
  echo "| RAM | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| kernel | $(uname -sr) |"
  echo "| load average (1, 5, 15 min) before the run | ${LOAD_AT_START:-?} |"
}
