#!/usr/bin/env bash
# The swarm benchmark: 1 seed + SWARM_GETTERS getters starting together, every node capped
# at SWARM_RATE upload; the time until all finish against the fluid bound F / u. bench/run.sh
# sources this file and calls `swarm_bench`; run alone it measures only the swarm:
#
#   bench/swarm.sh                                     # 256M at 25M/s, 8 getters, best of 2
#   SWARM_SIZE=512M SWARM_RATE=25M RUNS=3 bench/swarm.sh
#
# Run alone it also honours SKIP_BUILD=1, BIN=DIR and KEEP_WORK=1 (see bench/run.sh).

# swarm_bench SRC [TAG]: one swarm of the first SWARM_SIZE bytes of SRC (needs WORK, BIN,
# TRACKER_URL and the helpers of lib.sh); records swarm figures with `put` and prints
# "seconds seed_uploaded_bytes". Nodes are stopped afterwards.
swarm_bench() {
  local src=$1 tag=${2:-} sw id t0 t g up maddr
  local nodes=() gets=()
  say "swarm: 1 seed + $SWARM_GETTERS getters at $SWARM_RATE each"
  sw=$WORK/swsrc$tag/swarm.bin
  mkdir -p "$WORK/swsrc$tag"
  head -c "$SWARM_SIZE" "$src" >"$sw"
  put swarm_bytes "$(stat -c %s "$sw")"
  put swarm_rate "$SWARM_RATE"
  put swarm_getters "$SWARM_GETTERS"
  new_home "seed$tag"
  id=$(share "seed$tag" "$sw")
  maddr=127.0.0.1:$(free_port)
  start_node "seed$tag" --max-upload-rate "$SWARM_RATE" --metrics-addr "$maddr"
  nodes+=("$LAST_PID")
  for g in $(seq "$SWARM_GETTERS"); do
    new_home "sw$tag$g"
    start_node "sw$tag$g" --max-upload-rate "$SWARM_RATE"
    nodes+=("$LAST_PID")
    fresh "$WORK/sw/$g"
  done
  t0=$(now)
  for g in $(seq "$SWARM_GETTERS"); do
    peer_cmd "sw$tag$g" get -o "$WORK/sw/$g" "$id" >/dev/null 2>"$WORK/sw$tag$g.err" &
    gets+=("$!")
    PIDS+=("$!")
  done
  for g in $(seq "$SWARM_GETTERS"); do
    wait "${gets[$((g - 1))]}" || die "swarm getter $g failed: $(cat "$WORK/sw$tag$g.err")"
  done
  t=$(since "$t0")
  put swarm "$t"
  up=$(python3 -c 'import sys, urllib.request as u
for l in u.urlopen("http://" + sys.argv[1] + "/metrics").read().decode().splitlines():
    if l.startswith("tessera_peer_uploaded_bytes_total"): print(int(float(l.split()[1])))' "$maddr")
  put swarm_seed_uploaded "$up"
  for g in $(seq "$SWARM_GETTERS"); do
    cmp -s "$WORK/sw/$g/"* "$sw" || die "swarm getter $g's copy differs"
  done
  for p in "${nodes[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK/sw" "$WORK/swsrc$tag"
  echo "$t $up"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  ROOT=$PWD
  SWARM_SIZE=${SWARM_SIZE:-256M} SWARM_RATE=${SWARM_RATE:-25M} SWARM_GETTERS=${SWARM_GETTERS:-8}
  RUNS=${RUNS:-2}
  BIN=${BIN:-$ROOT/target/release}
  WORK=$(mktemp -d -t tessera-bench.XXXXXX)
  RES=$WORK/results
  # shellcheck source=bench/lib.sh
  . "$ROOT/bench/lib.sh"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  [ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p tracker -p peer
  start_tracker t
  mkdir -p "$WORK/src" "$WORK/h"
  for r in $(seq "$RUNS"); do
    # New bytes each run: the last run's stopped nodes would still be listed as holders.
    head -c "$SWARM_SIZE" /dev/urandom >"$WORK/src/file.bin"
    # Not in a subshell: a failure must reach the cleanup trap, which stops the nodes.
    swarm_bench "$WORK/src/file.bin" "r$r" >"$WORK/run.txt"
    read -r t up <"$WORK/run.txt"
    python3 -c 'import sys
t, up, f = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
units = {"K": 1e3, "M": 1e6, "G": 1e9}
r = sys.argv[4].upper().removesuffix("/S").removesuffix("B")
u = float(r[:-1]) * units[r[-1]] if r[-1] in units else float(r)
b = f / u
print(f"swarm run {sys.argv[5]}: {t:.2f} s, fluid bound {b:.2f} s, {t / b:.2f}x the bound; "
      f"seed uploaded {up / f:.2f} F")' "$t" "$up" "$(stat -c %s "$WORK/src/file.bin")" "$SWARM_RATE" "$r"
  done
fi
