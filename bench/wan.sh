#!/usr/bin/env bash
# WAN links: Tessera's `peer get` beside iperf3, curl and rqbit on emulated links between
# hosts in network namespaces. Root only (it makes namespaces); one command; every namespace,
# link and process it makes is removed on exit, and the whole run is bounded in time.
#
#   getter ──veth── router ──veth── switch (a bridge) ──veth── seed1 … seedN
#
# The router runs bench/delayline, an AF_PACKET forwarder that holds every frame for RTT/2
# each way and drops a chosen fraction (this kernel has no sch_netem); rates are `tbf` on
# each host's veth egress (a seed's is the download rate, the getter's the upload rate).
# Addresses are 10.199.0.0/24, given only inside these namespaces, which have no route
# anywhere else: no packet leaves the machine. Per link, in this order: iperf3 -R (the link's
# reference, over IPERF_SECONDS; then for exactly SIZE bytes, slow start included), `peer get` from one `peer serve` node (the tracker sits beside the node, so the
# getter's tracker calls cross the link too), curl from `python3 -m http.server`, and rqbit
# seeding to rqbit with --initial-peers. Every copy is checked by SHA-256. Then (full mode)
# 4 seeds at 100 Mbit/s into a getter at 1 Gbit/s vs one seed, with the bytes the seeds sent
# (their tessera_peer_uploaded_bytes_total), a 1 MiB get's first byte and end vs curl's, and
# the tracker's search beside a flooded one (`search --peers`) at RTT 50 ms, and last a
# swarm of 1 seed + 6 getters on links of its own (bench/wan_swarm.sh).
#
#   bench/wan.sh              # full: 4 links, 256 MiB, release build; ~10-15 minutes
#   bench/wan.sh --append     # the same, then appends the table to BENCHMARKS.md
#   bench/wan.sh --smoke      # 4 MiB, one link (100 Mbit/s, RTT 20 ms), no rqbit (CI)
#
# Knobs (environment): SIZE (256M; smoke 4M), RUNS (best of N per tool and link; 1),
# IPERF_SECONDS (10; smoke 2), BIN=DIR (prebuilt peer and tracker; only the delay line is
# then built), SKIP_BUILD=1, SKIP_RQBIT=1, SKIP_EXTRAS=1 (no 4-seed, 1 MiB, search and
# swarm rows), SKIP_SWARM=1, ONLY="l1 l2" (measure only these links; l1..l4 as below),
# TFO=0 (leave the namespaces' TCP Fast Open at the kernel default: client side only),
# CAPTURE=1 (tcpdump the getter's TCP headers and print, per big flow, MB delivered every
# 0.25 s after its SYN: bench/flows.py), CC=cubic (the namespaces' congestion control; the host's
# net.ipv4.tcp_allowed_congestion_control must list it), LIMIT (seconds for the whole run;
# 2400, smoke 150), KEEP_WORK=1 (keep the temp dir).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE= APPEND=
for a in "$@"; do
  case $a in
    --smoke) SMOKE=1 ;;
    --append) APPEND=1 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/wan.sh [--smoke] [--append]" >&2; exit 2 ;;
  esac
done
if [ -n "$SMOKE" ]; then LIMIT=${LIMIT:-150}; else LIMIT=${LIMIT:-2400}; fi
# The whole run under one time limit: `timeout` puts the script in a process group of its
# own and signals all of it at the limit; the EXIT trap below then removes everything.
if [ -z "${WAN_BOUNDED:-}" ]; then
  WAN_BOUNDED=1 exec timeout -k 60 "$LIMIT" "$SELF" "$@"
fi
[ "$(id -u)" = 0 ] || { echo "bench/wan.sh: needs root (network namespaces, tc, AF_PACKET)" >&2; exit 1; }

if [ -n "$SMOKE" ]; then
  SIZE=${SIZE:-4M} IPERF_SECONDS=${IPERF_SECONDS:-2} PROFILE=debug GET_TIMEOUT=${GET_TIMEOUT:-60}
  SKIP_RQBIT=1 SKIP_EXTRAS=1
else
  SIZE=${SIZE:-256M} IPERF_SECONDS=${IPERF_SECONDS:-10} PROFILE=release GET_TIMEOUT=${GET_TIMEOUT:-600}
fi
RUNS=${RUNS:-1}
BIN_GIVEN=${BIN:-}
BIN=${BIN:-$ROOT/target/$PROFILE}
BIN=$(cd "$BIN" 2>/dev/null && pwd || echo "$BIN")
REAL_BIN=$BIN
DELAYLINE=${DELAYLINE:-$ROOT/target/$PROFILE/delayline}

WORK=$(mktemp -d -t tessera-wan.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(now)

# shellcheck source=bench/netns.sh
. "$ROOT/bench/netns.sh"
trap netns_cleanup EXIT
trap 'exit 130' INT TERM
# Failures are written to a file: the measurements run in subshells.
fail() { say "FAILED: $*"; echo "$*" >>"$WORK/failed"; }

# --- Tools: apt only; rqbit with cargo in the full mode, skipped with a note otherwise.
# (The smoke needs only iperf3 and curl: its link has no loss, so no ethtool, and ping is a
# check the table can do without.)
need=() tools=(iperf3:iperf3 curl:curl)
[ -n "$SMOKE" ] || tools+=(ping:iputils-ping ethtool:ethtool)
for c in "${tools[@]}"; do
  command -v "${c%%:*}" >/dev/null || need+=("${c##*:}")
done
[ -x /usr/bin/time ] || need+=(time)
[ -n "${SKIP_RQBIT:-}" ] || command -v mktorrent >/dev/null || need+=(mktorrent)
[ -z "${CAPTURE:-}" ] || command -v tcpdump >/dev/null || need+=(tcpdump)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    say "apt-get install ${need[*]} failed: the rows that need them are skipped"
fi
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
RQBIT_NOTE=
if [ -z "${SKIP_RQBIT:-}" ] && ! command -v rqbit >/dev/null; then
  say "installing rqbit (cargo install rqbit --locked; several minutes)"
  cargo install rqbit --locked || RQBIT_NOTE="rqbit could not be installed (cargo install rqbit --locked failed)"
fi
if [ -n "${SKIP_RQBIT:-}" ]; then RQBIT_NOTE=${SMOKE:+smoke: no rqbit}; RQBIT_NOTE=${RQBIT_NOTE:-SKIP_RQBIT set}
elif ! command -v rqbit >/dev/null || ! command -v mktorrent >/dev/null; then
  RQBIT_NOTE=${RQBIT_NOTE:-rqbit or mktorrent missing}
fi

# --- Build: the delay line always (unless SKIP_BUILD), peer and tracker unless BIN was given.
if [ -z "${SKIP_BUILD:-}" ]; then
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  pkgs=(-p delayline); [ -n "$BIN_GIVEN" ] || pkgs+=(-p peer -p tracker)
  say "building ($PROFILE: ${pkgs[*]})"
  cargo build "${flag[@]}" "${pkgs[@]}"
fi
for b in "$REAL_BIN/peer" "$REAL_BIN/tracker" "$DELAYLINE"; do [ -x "$b" ] || die "missing binary $b"; done

# --- The network.
SUB=10.199.0
GETTER_IP=$SUB.1
seed_ip() { echo "$SUB.$((10 + $1))"; }
NSEEDS=4; [ -z "${SKIP_EXTRAS:-}" ] || NSEEDS=1
HOSTS=(g); for i in $(seq "$NSEEDS"); do HOSTS+=("s$i"); done
say "network: namespaces $P-{g,r,w,s1..s$NSEEDS}"
make_ns r
make_ns w
nsx w ip link add br0 type bridge
nsx w ip link set br0 up
ip link add rw netns "$P-r" type veth peer name wr netns "$P-w"
nsx w ip link set wr master br0
nsx w ip link set wr up
for h in "${HOSTS[@]}"; do
  make_host "$h"
  if [ "$h" = g ]; then
    ip link add eth0 netns "$P-g" type veth peer name rg netns "$P-r"
    nsx g ip addr add "$GETTER_IP/24" dev eth0
  else
    ip link add eth0 netns "$P-$h" type veth peer name "w$h" netns "$P-w"
    nsx w ip link set "w$h" master br0
    nsx w ip link set "w$h" up
    nsx "$h" ip addr add "$(seed_ip "${h#s}")/24" dev eth0
  fi
  nsx "$h" ip link set eth0 up
done
nsx r ip link set rg up
nsx r ip link set rw up
CC=$(nsx g sysctl -n net.ipv4.tcp_congestion_control)
if [ -n "${CAPTURE:-}" ]; then
  # Headers only; the EXIT trap stops it with everything else in the namespaces.
  nsx g tcpdump -i any -s 96 -B 16384 -U -w "$WORK/g.pcap" tcp >/dev/null 2>"$WORK/tcpdump.err" &
  CAPTURE_PID=$!
fi
put tfo "$(nsx g sysctl -n net.ipv4.tcp_fastopen)"

WB=$WORK/bin
for h in "${HOSTS[@]}"; do
  addr=$GETTER_IP; [ "$h" = g ] || addr=$(seed_ip "${h#s}")
  host_bin "$h" "$addr"
done

# set_link NAME SEED_RATE GETTER_RATE RTT_MS LOSS_PCT: rates, offloads and a new delay line.
DL_PID=
DL_N=0
set_link() {
  local name=$1 srate=$2 grate=$3 rtt=$4 loss=$5 tso=on h burst
  stop_delayline
  # Loss is per forwarded frame: on a lossy link the hosts send MTU-sized frames, not
  # TSO/GSO super-frames of up to 64 KiB.
  [ "$loss" = 0 ] || tso=off
  for h in "${HOSTS[@]}"; do
    if command -v ethtool >/dev/null; then
      nsx "$h" ethtool -K eth0 tso "$tso" gso "$tso" >/dev/null 2>&1 || true
    elif [ "$tso" = off ]; then
      die "ethtool is missing: cannot turn TSO off for a lossy link"
    fi
    local rate=$srate; [ "$h" = g ] && rate=$grate
    burst=128k; [ "${rate%gbit}" != "$rate" ] && burst=256k
    nsx "$h" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" limit 15000000
  done
  DL_N=$((DL_N + 1))
  start_delayline r rg rw "$(python3 -c "print($rtt / 2)")" "$loss" "$DL_N"
  # ping warms the ARP caches and checks the round trip.
  local i ping_rtt=
  if command -v ping >/dev/null; then
    for i in $(seq "$NSEEDS"); do nsx g ping -c 1 -W 2 "$(seed_ip "$i")" >/dev/null 2>&1 || true; done
    ping_rtt=$(nsx g ping -c 5 -i 0.2 -q "$(seed_ip 1)" 2>/dev/null | awk -F/ '/^rtt/ {printf "%.1f", $5}')
  fi
  say "link $name: seeds $srate, getter $grate, RTT $rtt ms (ping avg ${ping_rtt:-?} ms), loss $loss %, TSO $tso"
  put "$name.ping" "${ping_rtt:-?}"
}
stop_delayline() {
  [ -n "$DL_PID" ] || return 0
  stop_pid "$DL_PID"
  DL_PID=
  local bad
  bad=$(delayline_faults "$DL_N")
  [ -z "$bad" ] || say "delay line of link $DL_N: $bad"
  put "delayline_$DL_N" "${bad:-clean}"
}

# --- The files and the source side: a tracker and a node in seed1, an HTTP server, rqbit.
mkdir -p "$WORK/src" "$WORK/h"
SRC=$WORK/src/file.bin
SMALL=$WORK/src/small.bin
say "writing a $SIZE random file"
head -c "$SIZE" /dev/urandom >"$SRC"
BYTES=$(stat -c %s "$SRC")
SRC_SHA=$(sha256sum <"$SRC" | cut -c1-64)
head -c 1M /dev/urandom >"$SMALL"
SMALL_SHA=$(sha256sum <"$SMALL" | cut -c1-64)
# check_copy FILE SHA WHAT: the copy's SHA-256 against the original's.
check_copy() {
  local got
  got=$(sha256sum <"$1" 2>/dev/null | cut -c1-64)
  [ "$got" = "$2" ] || { fail "$3: the copy's SHA-256 differs from the original's"; return 1; }
}

SEED1=$(seed_ip 1)
BIN=$WB/s1 start_tracker t
BIN=$WB/s1 new_home seed1
ID=$(BIN=$WB/s1 share seed1 "$SRC")
SMALL_ID=
[ -n "${SKIP_EXTRAS:-}" ] || SMALL_ID=$(BIN=$WB/s1 share seed1 "$SMALL")
BIN=$WB/s1 start_node seed1 --metrics-addr 127.0.0.1:9100
NODE_PORT=$(awk '/serving on/ {print $NF}' "$WORK/seed1.out" | sed 's/.*://')
HTTP_PORT=8000
ip netns exec "$P-s1" python3 -m http.server --bind "$SEED1" --directory "$WORK/src" "$HTTP_PORT" >"$WORK/http.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  nsx s1 curl -sf -o /dev/null -r 0-0 "http://$SEED1:$HTTP_PORT/small.bin" 2>/dev/null && break; sleep 0.1
done

RQ_PORT=6881
if [ -z "$RQBIT_NOTE" ]; then
  # The seeder gets a copy of its own: rqbit opens its files for writing (--overwrite), which
  # changes their mtime, and the Tessera node then withdraws the file as changed on disk.
  mkdir -p "$WORK/rq/seed-home" "$WORK/rq/leech-home" "$WORK/rq/data"
  cp "$SRC" "$WORK/rq/data/file.bin"
  mktorrent -l 20 -o "$WORK/rq/f.torrent" "$WORK/rq/data/file.bin" >/dev/null
  # rqbit keeps its session under $HOME: one home each, inside the work dir.
  rq() { local home=$1 ip=$2; shift 2; HOME=$home XDG_CACHE_HOME=$home XDG_DATA_HOME=$home \
    rqbit --disable-dht --disable-dht-persistence --disable-lsd --disable-upnp-port-forward \
    --listen-ip "$ip" "$@"; }
  ip netns exec "$P-s1" bash -c "$(declare -f rq); rq '$WORK/rq/seed-home' '$SEED1' --listen-port $RQ_PORT \
    --announce-port $RQ_PORT download --disable-http-api --overwrite -o '$WORK/rq/data' '$WORK/rq/f.torrent'" \
    >"$WORK/rq/seed.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do grep -q 'Initial check results' "$WORK/rq/seed.log" && break; sleep 0.1; done
  grep -q 'Initial check results' "$WORK/rq/seed.log" ||
    RQBIT_NOTE="the rqbit seeder did not start: $(tail -1 "$WORK/rq/seed.log")"
fi
[ -z "$RQBIT_NOTE" ] || say "rqbit column skipped: $RQBIT_NOTE"

# uploaded SEED: the node's tessera_peer_uploaded_bytes_total.
uploaded() {
  nsx "s$1" curl -sf "http://127.0.0.1:9100/metrics" |
    awk '/^tessera_peer_uploaded_bytes_total/ {printf "%d", $2; found=1} END {if (!found) print 0}'
}
# link_tx SEED: the bytes that left the seed's link so far (payload and one header per
# frame: the node's count includes chunks read for requests cancelled before they went out).
link_tx() { nsx "s$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
# best_of CMD…: the smallest of RUNS times printed by CMD (or nothing if every run failed).
best_of() {
  local r t
  for r in $(seq "$RUNS"); do
    t=$("$@" "$r") && echo "$t" || true
  done | best
}

# The measurements of one link; each prints seconds (or nothing when it failed).
# The getters' names are counted in a file: the measurements run in subshells.
echo 0 >"$WORK/getters"
m_peer() {
  local out=$WORK/out/peer r GET_N
  GET_N=$(($(cat "$WORK/getters") + 1))
  echo "$GET_N" >"$WORK/getters"
  if r=$(BIN=$WB/g timed_get "get$GET_N" "$ID" "$SRC" "$out"); then
    check_copy "$out/file.bin" "$SRC_SHA" "peer get" && echo "${r%% *}"
  else
    fail "peer get on link $LINK: $(tail -2 "$WORK/get$GET_N.err" 2>/dev/null | tr '\n' ' ')"
  fi
  rm -rf "$out"
}
m_curl() {
  local out=$WORK/out/curl t0 t
  fresh "$out"
  t0=$(now)
  if nsx g timeout --foreground "$GET_TIMEOUT" curl -sSf -o "$out/file.bin" \
    "http://$SEED1:$HTTP_PORT/file.bin" 2>"$WORK/curl.err"; then
    t=$(since "$t0")
    check_copy "$out/file.bin" "$SRC_SHA" "curl" && echo "$t"
  else
    fail "curl on link $LINK: $(cat "$WORK/curl.err")"
  fi
  rm -rf "$out"
}
m_rqbit() {
  local out=$WORK/out/rq t0 t
  fresh "$out"
  rm -rf "$WORK/rq/leech-home"; mkdir -p "$WORK/rq/leech-home"
  t0=$(now)
  if nsx g timeout --foreground "$GET_TIMEOUT" bash -c "$(declare -f rq); rq '$WORK/rq/leech-home' \
    '$GETTER_IP' --listen-port $((RQ_PORT + 1)) download --disable-http-api -e \
    --initial-peers '$SEED1:$RQ_PORT' -o '$out' '$WORK/rq/f.torrent'" >"$WORK/rq/leech.log" 2>&1; then
    t=$(since "$t0")
    check_copy "$out/file.bin" "$SRC_SHA" "rqbit" && echo "$t"
  else
    fail "rqbit on link $LINK: $(tail -1 "$WORK/rq/leech.log")"
  fi
  rm -rf "$out"
}
# m_iperf [bytes] RUN: iperf3 -R for IPERF_SECONDS (the link's rate), or with `bytes` for
# exactly SIZE bytes from a cold connection (slow start included, as every copy pays it).
m_iperf() {
  local len=(-t "$IPERF_SECONDS") tag=t
  if [ "$1" = bytes ]; then len=(-n "$BYTES"); tag=n; shift; fi
  local r=$1 json=$WORK/iperf-$LINK-$tag$r.json
  ip netns exec "$P-s1" timeout --foreground $((IPERF_SECONDS + 60)) iperf3 -s -1 --forceflush \
    -B "$SEED1" >"$WORK/iperf-$LINK-$tag$r.out" 2>&1 &
  local spid=$!
  PIDS+=("$spid")
  wait_for "$WORK/iperf-$LINK-$tag$r.out" 'Server listening'
  if nsx g timeout --foreground $((IPERF_SECONDS + 30)) iperf3 -c "$SEED1" -R "${len[@]}" -J >"$json" 2>&1; then
    # As seconds for SIZE bytes, like the others: the table turns every figure into MB/s.
    python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]; print(f"{int(sys.argv[2])*8/b:.3f}")' "$json" "$BYTES"
  else
    fail "iperf3 on link $LINK: $(tail -c 300 "$json")"
  fi
  stop_pid "$spid"
}

# measure_link NAME SEED_RATE GETTER_RATE RTT_MS LOSS_PCT LABEL
measure_link() {
  LINK=$1
  set_link "$@"
  put "$LINK.label" "$(echo "$6" | tr ' ' '_')"
  if command -v iperf3 >/dev/null; then
    put "$LINK.iperf" "$(best_of m_iperf)"
    put "$LINK.iperf_n" "$(best_of m_iperf bytes)"
  fi
  say "link $LINK: peer get"
  put "$LINK.peer" "$(best_of m_peer)"
  if command -v curl >/dev/null; then say "link $LINK: curl"; put "$LINK.curl" "$(best_of m_curl)"; fi
  if [ -z "$RQBIT_NOTE" ]; then say "link $LINK: rqbit"; put "$LINK.rqbit" "$(best_of m_rqbit)"; fi
}

# first_byte NAME CMD…: runs CMD while `ss` watches the getter's connections to seed1's node
# and HTTP server; prints "first_byte_s total_s", both from the start of CMD. The first byte
# is when one of those connections has received more than 2 KiB.
first_byte() {
  local name=$1 t0 t tf
  shift
  rm -f "$WORK/$name.first"
  ip netns exec "$P-g" timeout 30 bash -c "while :; do ss -Htin state established '( dport = :$NODE_PORT or dport = :$HTTP_PORT )' |
    grep -oE 'bytes_received:[0-9]+' | awk -F: '\$2 > 2048 {f=1} END {exit !f}' && { date +%s.%N >'$WORK/$name.first'; exit 0; }; done" &
  local watcher=$!
  PIDS+=("$watcher")
  sleep 0.2
  t0=$(now)
  "$@" >"$WORK/$name.cmd.out" 2>&1 || { fail "$name: $(tail -2 "$WORK/$name.cmd.out" | tr '\n' ' ')"; stop_pid "$watcher"; return 1; }
  t=$(since "$t0")
  stop_pid "$watcher"
  tf=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$t0" "$(cat "$WORK/$name.first" 2>/dev/null || echo "$t0")")
  echo "$tf $t"
}
median() { sort -g | awk '{a[NR]=$0} END {if (NR) print a[int((NR + 1) / 2)]}'; }

# --- The links.
if [ -n "$SMOKE" ]; then
  LINKS=("l1 100mbit 100mbit 20 0 100_Mbit/s,_RTT_20_ms")
else
  LINKS=("l1 1gbit 1gbit 50 0 1_Gbit/s,_RTT_50_ms"
    "l2 1gbit 1gbit 100 0 1_Gbit/s,_RTT_100_ms"
    "l3 100mbit 100mbit 100 0 100_Mbit/s,_RTT_100_ms"
    "l4 100mbit 100mbit 50 1 100_Mbit/s,_RTT_50_ms,_1_%_loss")
fi
for spec in "${LINKS[@]}"; do
  read -r n s g rtt loss label <<<"$spec"
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $n "* ]] || continue
  measure_link "$n" "$s" "$g" "$rtt" "$loss" "${label//_/ }"
  if [ "$n" = l2 ] && [ -z "${SKIP_EXTRAS:-}" ]; then
    # A 1 MiB file at RTT 100 ms: first byte and end, peer get vs curl (median of 3).
    say "link $n: 1 MiB first byte, peer get vs curl"
    fo0=$(fast_opens g)
    for r in 1 2 3; do
      BIN=$WB/g new_home "small$r"
      fresh "$WORK/out/small"
      first_byte "small-peer$r" "$WB/g/peer" --home "$WORK/h/small$r" --tracker "$TRACKER_URL" --quiet \
        get -o "$WORK/out/small" "$SMALL_ID" >>"$WORK/small-peer"
      check_copy "$WORK/out/small/small.bin" "$SMALL_SHA" "1 MiB peer get" || true
      fresh "$WORK/out/small"
      first_byte "small-curl$r" nsx g timeout 60 curl -sSf -o "$WORK/out/small/small.bin" \
        "http://$SEED1:$HTTP_PORT/small.bin" >>"$WORK/small-curl"
      check_copy "$WORK/out/small/small.bin" "$SMALL_SHA" "1 MiB curl" || true
    done
    put small.fast_opens "$(($(fast_opens g) - fo0))"
    for w in peer curl; do
      put "small.$w.first" "$(cut -d' ' -f1 "$WORK/small-$w" | median)"
      put "small.$w.total" "$(cut -d' ' -f2 "$WORK/small-$w" | median)"
    done
  fi
done

if [ -z "${SKIP_EXTRAS:-}" ]; then
  # 4 seeds at 100 Mbit/s into a getter at 1 Gbit/s (its downlink is not capped: 4 x 100
  # Mbit/s is below it), RTT 50 ms: one seed first, then all four.
  set_link m 100mbit 1gbit 50 0
  LINK=m
  u0=$(uploaded 1) x0=$(link_tx 1)
  put m.one "$(best_of m_peer)"
  put m.one_sent "$(( $(uploaded 1) - u0 ))"
  put m.one_tx "$(( $(link_tx 1) - x0 ))"
  for i in $(seq 2 "$NSEEDS"); do
    BIN=$WB/s$i new_home "seed$i"
    BIN=$WB/s$i share "seed$i" "$SRC" >/dev/null
    BIN=$WB/s$i start_node "seed$i" --metrics-addr 127.0.0.1:9100
  done
  before=0 tx0=0
  for i in $(seq "$NSEEDS"); do before=$((before + $(uploaded "$i"))) tx0=$((tx0 + $(link_tx "$i"))); done
  put m.four "$(best_of m_peer)"
  after=0 tx1=0
  for i in $(seq "$NSEEDS"); do after=$((after + $(uploaded "$i"))) tx1=$((tx1 + $(link_tx "$i"))); done
  put m.four_sent "$((after - before))"
  put m.four_tx "$((tx1 - tx0))"
  put m.runs "$RUNS"
  sources=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["sources"])' "$WORK/get$(cat "$WORK/getters").json" 2>/dev/null || echo '?')
  put m.sources "$sources"

  # Search at RTT 50 ms, same link: the tracker's (one request) beside a flooded one
  # (`search --peers`, TTL 2) from a getter whose only contact is seed1, which knows the
  # other seeds: the query crosses the link once, every seed answers straight back across
  # it. Median of 3 each.
  say "link m: search, the tracker's and flooded"
  node_addr() { awk '/serving on/ {print $NF}' "$WORK/$1.out"; }
  BIN=$WB/g new_home fl
  BIN=$WB/g peer_cmd fl contacts add "$(node_addr seed1)" >/dev/null
  for i in $(seq 2 "$NSEEDS"); do
    BIN=$WB/s1 peer_cmd seed1 contacts add "$(node_addr "seed$i")" >/dev/null
  done
  for r in 1 2 3; do
    t0=$(now)
    BIN=$WB/g peer_cmd fl --json search file.bin >"$WORK/ts$r.json" || fail "tracker search $r"
    since "$t0" >>"$WORK/search-tracker"
    BIN=$WB/g peer_cmd fl --json search --peers file.bin --ttl 2 --wait 2s \
      >"$WORK/fs$r.json" 2>"$WORK/fs$r.err" || fail "flooded search $r: $(tail -1 "$WORK/fs$r.err")"
    sed -n 's/.*first answer after \([0-9]*\) ms.*/\1/p' "$WORK/fs$r.err" >>"$WORK/search-flood"
  done
  put search.tracker "$(median <"$WORK/search-tracker")"
  put search.flood_first_ms "$(median <"$WORK/search-flood")"
  put search.flood_holders "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["holders"])' "$WORK/fs3.json" 2>/dev/null || echo '?')"
fi
# The getter reached the seed host before its gets (register, login), so their connections
# to it (the tracker's, the node's) carry their first call in the SYN: the smoke keeps that
# from rotting.
if [ -n "$SMOKE" ] && [ "${TFO:-1}" != 0 ]; then
  n=$(fast_opens g)
  say "TCP Fast Open: $n connection(s) of the getter sent data in the SYN"
  [ "${n:-0}" -gt 0 ] || fail "TCP Fast Open: no connection of the getter sent data in its SYN"
fi
stop_delayline
if [ -n "${CAPTURE:-}" ]; then
  # tcpdump writes each packet as it takes it (-U): once the file stops growing it has taken
  # the last ones from the kernel's buffer, however busy the machine (at most 20 s). Then
  # TERM: a background job of a script ignores INT.
  size=-1
  for _ in $(seq 40); do
    now_size=$(stat -c %s "$WORK/g.pcap" 2>/dev/null || echo 0)
    [ "$now_size" = "$size" ] && break
    size=$now_size
    sleep 0.5
  done
  kill -TERM "$CAPTURE_PID" 2>/dev/null || true
  wait "$CAPTURE_PID" 2>/dev/null || true
  python3 "$ROOT/bench/flows.py" "$WORK/g.pcap" "$BYTES" 5201=iperf3 "$HTTP_PORT=curl" \
    "$NODE_PORT=peer get" "$RQ_PORT=rqbit" >"$WORK/flows.txt" || fail "reading the capture: bench/flows.py"
  for tool in "peer get" curl; do
    grep -q "^$tool " "$WORK/flows.txt" || fail "the capture shows no flow of the whole file for $tool"
  done
fi
if [ -z "${SKIP_EXTRAS:-}" ] && [ -z "${SKIP_SWARM:-}" ]; then
  # The swarm has a topology of its own (every host behind its own delay line).
  say "swarm: bench/wan_swarm.sh"
  SKIP_BUILD=1 BIN=$REAL_BIN DELAYLINE=$DELAYLINE SWARM_OUT=$WORK/swarm.md GET_TIMEOUT=$GET_TIMEOUT \
    "$ROOT/bench/wan_swarm.sh" >&2 || fail "the swarm (bench/wan_swarm.sh)"
fi
put elapsed "$(since "$T_START")"

# --- The table.
TABLE=$WORK/table.md
python3 - "$RES" "$BYTES" "$CC" "${RQBIT_NOTE:-}" "$SMOKE" "$RUNS" "$WORK/swarm.md" >"$TABLE" <<'PY'
import os, sys
res, nbytes, cc, rqnote, smoke, runs, swarm = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7]
r = {}
for line in open(res):
    k, _, v = line.rstrip("\n").partition(" ")
    r[k] = v
links = [k[:-6] for k in r if k.endswith(".label")]
mbs = lambda t: nbytes / float(t) / 1e6
def cell(link, what):
    t = r.get(f"{link}.{what}", "")
    if what == "rqbit" and rqnote:
        return "not run"
    if not t:
        return "**failed**" if f"{link}.{what}" in r else "not run"
    ip = r.get(f"{link}.iperf", "")
    pct = f" ({float(ip) / float(t) * 100:.0f} %)" if ip else ""
    return f"{mbs(t):.1f} MB/s{pct}"
size = f"{nbytes / 2**20:.0f} MiB"
print(f"| link ({size}; iperf3 = 100 %) | iperf3 -n {size} (cold start) | peer get | curl from `python3 -m http.server` | rqbit → rqbit |")
print("|---|---|---|---|---|")
for l in links:
    ip = r.get(f"{l}.iperf", "")
    ipt = f"{mbs(ip):.1f} MB/s" if ip else "not run"
    label = r[f"{l}.label"].replace("_", " ")
    print(f"| {label} (ping {r.get(l + '.ping', '?')} ms): iperf3 {ipt} | {cell(l, 'iperf_n')} | {cell(l, 'peer')} | {cell(l, 'curl')} | {cell(l, 'rqbit')} |")
notes = []
if "m.one" in r:
    one, four = r["m.one"], r["m.four"]
    if one and four:
        notes.append(f"4 seeds at 100 Mbit/s into a getter at 1 Gbit/s, RTT 50 ms: one seed {float(one):.2f} s "
                     f"({mbs(one):.1f} MB/s), four seeds {float(four):.2f} s ({mbs(four):.1f} MB/s, "
                     f"{r['m.sources']} sources used): **{float(one) / float(four):.2f}× one seed**. "
                     f"Bytes the seeds' links sent (tx_bytes, summed over the seeds, all {runs} run(s)) per "
                     f"byte got: one seed {int(r['m.one_tx']) / nbytes / runs:.3f}, four seeds "
                     f"{int(r['m.four_tx']) / nbytes / runs:.3f}; chunk bytes their nodes read "
                     f"(tessera_peer_uploaded_bytes_total): {int(r['m.one_sent']) / nbytes / runs:.3f} and "
                     f"{int(r['m.four_sent']) / nbytes / runs:.3f}.")
    else:
        notes.append("4 seeds: **failed** (see the messages above)")
if "small.peer.total" in r:
    sp, sc = (r["small.peer.first"], r["small.peer.total"]), (r["small.curl.first"], r["small.curl.total"])
    notes.append(f"1 MiB at 1 Gbit/s, RTT 100 ms (median of 3; first byte: the getter's connection "
                 f"to the seed has 2 KiB, seen by `ss`): peer get first byte {float(sp[0]):.2f} s, done {float(sp[1]):.2f} s; "
                 f"curl first byte {float(sc[0]):.2f} s, done {float(sc[1]):.2f} s. Connections the 6 "
                 f"commands opened with their first bytes in the SYN (TCP Fast Open, the getter's "
                 f"TCPFastOpenActive): {r.get('small.fast_opens', '?')}.")
if "search.tracker" in r:
    notes.append(f"Search at RTT 50 ms (median of 3): the tracker's `peer search` {float(r['search.tracker']) * 1000:.0f} ms "
                 f"for the whole command (process start, connect, one request); a flooded `peer search --peers` (TTL 2, "
                 f"getter → seed1 → the 3 other seeds) first answer {r['search.flood_first_ms'] or '?'} ms after "
                 f"the query left, holders answering {r['search.flood_holders']}.")
if os.path.exists(swarm):
    notes.append(open(swarm).read().strip())
bad = [f"link {k.split('_')[1]}: {v}" for k, v in r.items() if k.startswith("delayline_") and v != "clean"]
notes.append("Delay line: " + ("; ".join(bad) if bad else "no frame lost but the chosen ones (no queue overflow, kernel drop or send error)") + ".")
tfo = r.get("tfo", "?")
tfo_says = "servers may take data in the SYN" if tfo.isdigit() and int(tfo) & 2 else "client side only"
notes.append(f"TCP Fast Open in the namespaces: net.ipv4.tcp_fastopen={tfo} ({tfo_says}; "
             "`python3 -m http.server` does not ask for it, so curl's connections are plain).")
notes.append(f"Congestion control in the namespaces: {cc}. Best of {runs} run(s) per tool and link; "
             f"whole run {float(r['elapsed']):.0f} s." + (f" rqbit: {rqnote}." if rqnote else ""))
print()
for n in notes:
    print(f"- {n}")
PY
echo
cat "$TABLE"
if [ -s "$WORK/flows.txt" ]; then
  printf '\nCapture of the getter (CAPTURE=1), flows of the whole file:\n\n```text\n%s\n```\n' \
    "$(cat "$WORK/flows.txt")" >>"$TABLE"
  sed -n '/^Capture of the getter/,$p' "$TABLE"
fi
if [ -n "$APPEND" ] && [ -z "$SMOKE" ] && [ ! -s "$WORK/failed" ]; then
  {
    echo
    echo "## WAN links (network namespaces): run of $(date -u '+%Y-%m-%d %H:%M UTC') (\`bench/wan.sh\`)"
    echo
    machine
    echo
    cat "$TABLE"
  } >>"$ROOT/BENCHMARKS.md"
  say "appended to BENCHMARKS.md"
elif [ -n "$APPEND" ]; then
  say "not appended to BENCHMARKS.md (smoke run or failures)"
fi
if [ -s "$WORK/failed" ]; then
  say "$(wc -l <"$WORK/failed") failure(s):"
  sed 's/^/  /' "$WORK/failed" >&2
  exit 1
fi
say "done in $(since "$T_START") s"
