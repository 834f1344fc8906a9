#!/usr/bin/env bash
# A swarm on emulated WAN links: 1 seed and SWARM_GETTERS getters (6) that all start
# together, every host's upload capped at RATE (100 Mbit/s) and every two hosts RTT (50 ms)
# apart; the time until the last getter ends against the fluid bound at the measured rate,
# and what the seed and the getters uploaded. Root only; one command; everything it makes
# is removed on exit, and the run is bounded in time.
#
#   seed, getter1 … getterN ──veth── router: a delay line per host ──veth── switch (a bridge)
#
# Each host's frames cross its own delay line (RTT/4 each way) and the other host's, so every
# pair sees RTT; rates are `tbf` on each host's veth egress (its upload; downloads are
# capped only by the others' uploads). The tracker sits beside the seed, so the getters'
# tracker calls cross the links too. Each getter's home runs `peer serve`, which serves the
# chunks it holds while its `peer get` runs. The reference rate u is iperf3 from the seed to
# getter1 over IPERF_SECONDS; with every cap equal the fluid bound is F / u (bench/swarm.sh).
#
#   bench/wan_swarm.sh            # 128 MiB, 1 + 6 at 100 Mbit/s, RTT 50 ms; ~2 minutes
#   bench/wan_swarm.sh --append   # the same, then appends the result to BENCHMARKS.md
#
# Knobs (environment): SWARM_SIZE (128M), SWARM_GETTERS (6), RATE (100mbit), RTT (50),
# RUNS (best of N; 1), IPERF_SECONDS (10), BIN=DIR (prebuilt peer and tracker), SKIP_BUILD=1,
# LIMIT (seconds for the whole run; 900), KEEP_WORK=1, SWARM_OUT=FILE (also write the
# result line there: bench/wan.sh does).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
ROOT=$PWD
APPEND=
for a in "$@"; do
  case $a in
    --append) APPEND=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/wan_swarm.sh [--append]" >&2; exit 2 ;;
  esac
done
LIMIT=${LIMIT:-900}
if [ -z "${WAN_SWARM_BOUNDED:-}" ]; then
  WAN_SWARM_BOUNDED=1 exec timeout -k 60 "$LIMIT" "$SELF" "$@"
fi
[ "$(id -u)" = 0 ] || { echo "bench/wan_swarm.sh: needs root (network namespaces, tc, AF_PACKET)" >&2; exit 1; }

SWARM_SIZE=${SWARM_SIZE:-128M} SWARM_GETTERS=${SWARM_GETTERS:-6} RATE=${RATE:-100mbit} RTT=${RTT:-50}
RUNS=${RUNS:-1} IPERF_SECONDS=${IPERF_SECONDS:-10} GET_TIMEOUT=${GET_TIMEOUT:-600}
BIN_GIVEN=${BIN:-}
REAL_BIN=$(cd "${BIN:-$ROOT/target/release}" 2>/dev/null && pwd || echo "${BIN:-$ROOT/target/release}")
DELAYLINE=${DELAYLINE:-$ROOT/target/release/delayline}

WORK=$(mktemp -d -t tessera-wan-swarm.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# shellcheck source=bench/netns.sh
. "$ROOT/bench/netns.sh"
trap netns_cleanup EXIT
trap 'exit 130' INT TERM
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(now)

need=()
for c in iperf3:iperf3 ping:iputils-ping; do command -v "${c%%:*}" >/dev/null || need+=("${c##*:}"); done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    die "apt-get install ${need[*]} failed"
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  pkgs=(-p delayline); [ -n "$BIN_GIVEN" ] || pkgs+=(-p peer -p tracker)
  say "building (release: ${pkgs[*]})"
  cargo build --release "${pkgs[@]}"
fi
for b in "$REAL_BIN/peer" "$REAL_BIN/tracker" "$DELAYLINE"; do [ -x "$b" ] || die "missing binary $b"; done

# --- The network: a star of hosts, each behind a delay line of its own.
SUB=10.198.0
HOSTS=(s) DLS=(); for i in $(seq "$SWARM_GETTERS"); do HOSTS+=("g$i"); done
host_ip() { if [ "$1" = s ]; then echo "$SUB.10"; else echo "$SUB.$((10 + ${1#g}))"; fi; }
say "network: namespaces $P-{r,w,s,g1..g$SWARM_GETTERS}, $RATE up each, RTT $RTT ms"
make_ns r
make_ns w
nsx w ip link add br0 type bridge
nsx w ip link set br0 up
for h in "${HOSTS[@]}"; do
  make_host "$h"
  ip link add eth0 netns "$P-$h" type veth peer name "a$h" netns "$P-r"
  ip link add "b$h" netns "$P-r" type veth peer name "p$h" netns "$P-w"
  nsx w ip link set "p$h" master br0
  nsx w ip link set "p$h" up
  nsx r ip link set "a$h" up
  nsx r ip link set "b$h" up
  nsx "$h" ip addr add "$(host_ip "$h")/24" dev eth0
  nsx "$h" ip link set eth0 up
  nsx "$h" tc qdisc replace dev eth0 root tbf rate "$RATE" burst 128k limit 15000000
  start_delayline r "a$h" "b$h" "$(python3 -c "print($RTT / 4)")" 0 "$h"
  DLS+=("$DL_PID")
  host_bin "$h" "$(host_ip "$h")"
done
SEED_IP=$(host_ip s)
for h in "${HOSTS[@]}"; do
  [ "$h" = s ] || nsx "$h" ping -c 1 -W 2 "$SEED_IP" >/dev/null 2>&1 || true
done
PING=$(nsx g1 ping -c 5 -i 0.2 -q "$SEED_IP" 2>/dev/null | awk -F/ '/^rtt/ {printf "%.1f", $5}')
nsx g1 ping -c 1 -W 2 "$(host_ip g2)" >/dev/null 2>&1 || true
PING_GG=$(nsx g1 ping -c 5 -i 0.2 -q "$(host_ip g2)" 2>/dev/null | awk -F/ '/^rtt/ {printf "%.1f", $5}')
say "ping seed: ${PING:-?} ms, getter to getter: ${PING_GG:-?} ms"

# The reference: iperf3 from the seed to getter1.
nsx s timeout $((IPERF_SECONDS + 60)) iperf3 -s -1 --forceflush -B "$SEED_IP" >"$WORK/iperf.out" 2>&1 &
PIDS+=($!)
wait_for "$WORK/iperf.out" 'Server listening'
nsx g1 timeout $((IPERF_SECONDS + 30)) iperf3 -c "$SEED_IP" -R -t "$IPERF_SECONDS" -J >"$WORK/iperf.json" ||
  die "iperf3: $(tail -c 300 "$WORK/iperf.json")"
U=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8)' "$WORK/iperf.json")
say "iperf3 seed -> getter1: $(python3 -c "print(f'{$U / 1e6:.2f}')") MB/s"

BIN=$WORK/bin/s start_tracker t
# tx_bytes HOST: what left the host's link so far (frames: payload and headers).
tx_bytes() { nsx "$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
# uploaded HOST: the node's tessera_peer_uploaded_bytes_total.
uploaded() {
  nsx "$1" curl -sf "http://127.0.0.1:9100/metrics" |
    awk '/^tessera_peer_uploaded_bytes_total/ {printf "%d", $2; found=1} END {if (!found) print 0}'
}

# run R: one swarm with new bytes (the last run's nodes would still be listed as holders);
# writes "seconds seed_uploaded getters_uploaded first_done" to $WORK/run-R.
run() {
  local r=$1 src=$WORK/src$1/swarm.bin id nodes=() gets=() t0 t g up_s up_g=0 firsts=()
  mkdir -p "$WORK/src$r" "$WORK/h"
  head -c "$SWARM_SIZE" /dev/urandom >"$src"
  BIN=$WORK/bin/s new_home "seed$r"
  id=$(BIN=$WORK/bin/s share "seed$r" "$src")
  BIN=$WORK/bin/s start_node "seed$r" --metrics-addr 127.0.0.1:9100
  nodes+=("$LAST_PID")
  for g in $(seq "$SWARM_GETTERS"); do
    BIN=$WORK/bin/g$g new_home "g$g-$r"
    BIN=$WORK/bin/g$g start_node "g$g-$r" --metrics-addr 127.0.0.1:9100
    nodes+=("$LAST_PID")
    fresh "$WORK/out$r/$g"
  done
  say "run $r: 1 seed + $SWARM_GETTERS getters, $SWARM_SIZE"
  local tx0_s tx0_g=0
  tx0_s=$(tx_bytes s)
  for g in $(seq "$SWARM_GETTERS"); do tx0_g=$((tx0_g + $(tx_bytes "g$g"))); done
  t0=$(now)
  for g in $(seq "$SWARM_GETTERS"); do
    ( RUST_LOG=${GET_LOG:-warn} BIN=$WORK/bin/g$g peer_cmd "g$g-$r" --json get -o "$WORK/out$r/$g" "$id" >"$WORK/get$r-$g.json" 2>"$WORK/get$r-$g.err" &&
      since "$t0" >"$WORK/done$r-$g" ) &
    gets+=("$!")
    PIDS+=("$!")
  done
  for g in $(seq "$SWARM_GETTERS"); do
    wait "${gets[$((g - 1))]}" || die "getter $g failed: $(tail -3 "$WORK/get$r-$g.err")"
  done
  t=$(since "$t0")
  local tx_s tx_g=0
  tx_s=$(( $(tx_bytes s) - tx0_s ))
  for g in $(seq "$SWARM_GETTERS"); do tx_g=$((tx_g + $(tx_bytes "g$g"))); done
  tx_g=$((tx_g - tx0_g))
  for g in $(seq "$SWARM_GETTERS"); do
    cmp -s "$WORK/out$r/$g/swarm.bin" "$src" || die "getter $g's copy differs"
    up_g=$((up_g + $(uploaded "g$g")))
    firsts+=("$(cat "$WORK/done$r-$g")")
  done
  up_s=$(uploaded s)
  for p in "${nodes[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK/out$r"
  echo "$t $up_s $up_g $tx_s $tx_g $(printf '%s\n' "${firsts[@]}" | sort -g | head -1)" >"$WORK/run-$r"
  say "run $r: all done in $t s; seed sent $up_s bytes, getters $up_g"
}
for r in $(seq "$RUNS"); do run "$r"; done
# The delay lines print their counters when they stop.
for p in "${DLS[@]}"; do stop_pid "$p"; done
for h in "${HOSTS[@]}"; do
  bad=$(delayline_faults "$h")
  [ -z "$bad" ] || echo "$h: $bad" >>"$WORK/faults"
done

LINE=$(python3 - "$WORK" "$RUNS" "$U" "$(stat -c %s "$WORK/src1/swarm.bin")" "$SWARM_GETTERS" "$RATE" "$RTT" \
  "${PING:-?}" "${PING_GG:-?}" <<'PY'
import sys, glob
work, runs, u, f, n, rate, rtt, ping, ping_gg = sys.argv[1:]
runs, u, f, n = int(runs), float(u), int(f), int(n)
rows = sorted((list(map(float, open(f"{work}/run-{r}").read().split())) for r in range(1, runs + 1)))
t, up_s, up_g, tx_s, tx_g, first = rows[0]
bound = f / u
print(f"Swarm of 1 seed + {n} getters, {f / 2**20:.0f} MiB, every host {rate} up, RTT {rtt} ms "
      f"(ping {ping} ms seed to getter, {ping_gg} ms getter to getter), all starting together "
      f"(best of {runs}): last getter done in **{t:.2f} s**, first in {first:.2f} s; fluid bound F / u "
      f"at iperf3's {u / 1e6:.2f} MB/s: {bound:.2f} s, so **{t / bound:.2f}× the bound**. "
      f"The seed's link sent **{tx_s / f:.3f} F** (its node read {up_s / f:.3f} F of chunks); the getters' "
      f"links sent {tx_g / f:.2f} F together (their nodes read {up_g / f:.2f} F), {tx_g / n / (u * t) * 100:.0f} % "
      f"of their uplinks over the run; F = {f} bytes.")
PY
)
faults=
[ ! -s "$WORK/faults" ] || faults=" Delay line faults: $(paste -sd';' "$WORK/faults")."
LINE="$LINE$faults Whole run $(python3 -c "print(round($(since "$T_START")))") s."
echo "- $LINE"
[ -z "${SWARM_OUT:-}" ] || echo "$LINE" >"$SWARM_OUT"
if [ -n "$APPEND" ]; then
  {
    echo
    echo "## WAN swarm (network namespaces): run of $(date -u '+%Y-%m-%d %H:%M UTC') (\`bench/wan_swarm.sh\`)"
    echo
    machine
    echo
    echo "- $LINE"
  } >>"$ROOT/BENCHMARKS.md"
  say "appended to BENCHMARKS.md"
fi
