# Hosts in network namespaces for the WAN benches (sourced after lib.sh, never run): the
# namespaces, the per-host wrappers that run peer and tracker inside them, and the delay
# lines between them. Every namespace and every process in it is removed by `netns_cleanup`
# (the scripts' EXIT trap). Needs root, WORK, GET_TIMEOUT, REAL_BIN and DELAYLINE.

# Namespaces are named after the script's pid, so two runs never share one.
P=tw$$
NETNS=()
nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# make_ns NAME: a namespace with loopback up and no IPv6.
make_ns() {
  ip netns add "$P-$1"
  NETNS+=("$P-$1")
  nsx "$1" ip link set lo up
  nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# make_host NAME: a host namespace whose TCP buffers may grow to 32 MB (a 1 Gbit/s x 100 ms
# path holds 12.5 MB), and whose listeners may take TCP Fast Open (net.ipv4.tcp_fastopen=3,
# as docs/reference.md suggests for servers; TFO=0 leaves the kernel's default, client only).
# CC=NAME sets the congestion control (else the kernel's default, reported by wan.sh).
make_host() {
  make_ns "$1"
  nsx "$1" sysctl -qw net.ipv4.tcp_rmem="4096 131072 33554432" net.ipv4.tcp_wmem="4096 16384 33554432"
  [ "${TFO:-1}" = 0 ] || nsx "$1" sysctl -qw net.ipv4.tcp_fastopen=3
  [ -z "${CC:-}" ] || nsx "$1" sysctl -qw net.ipv4.tcp_congestion_control="$CC"
}

# fast_opens NAME: how many connections the host opened with data in the SYN that the
# server took (the kernel's TCPFastOpenActive counter).
fast_opens() {
  nsx "$1" awk '/^TcpExt:/ { if (!seen) { seen = split($0, h); next } for (i = 2; i <= NF; i++) if (h[i] == "TCPFastOpenActive") print $i }' /proc/net/netstat
}

# The EXIT trap: stops everything running in our namespaces (all of it started by the
# script), then lib.sh's cleanup, then deletes the namespaces.
netns_cleanup() {
  local rc=$? ns p
  set +e
  trap - EXIT INT TERM
  for ns in "${NETNS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  cleanup
  for ns in "${NETNS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  exit "$rc"
}

# host_bin HOST ADDR: $WORK/bin/HOST/{peer,tracker}, the binaries as lib.sh calls them
# ("$BIN/peer", "$BIN/tracker"), run in HOST's namespace and listening on ADDR where lib.sh
# says 127.0.0.1:0; commands other than `serve` and the tracker are bounded by GET_TIMEOUT.
host_bin() {
  local h=$1 addr=$2 b
  mkdir -p "$WORK/bin/$h"
  for b in peer tracker; do
    cat >"$WORK/bin/$h/$b" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do [ "\$a" = 127.0.0.1:0 ] && a=$addr:0; args+=("\$a"); done
bound=(timeout --foreground $GET_TIMEOUT)
[ $b = tracker ] || [[ " \$* " = *" serve "* ]] && bound=()
exec ip netns exec $P-$h "\${bound[@]}" "$REAL_BIN/$b" "\${args[@]}"
WRAP
    chmod +x "$WORK/bin/$h/$b"
  done
}

# A delay line runs with real-time priority where the kernel allows it, so the other core's
# load does not add jitter.
CHRT=()

# start_delayline NS A B DELAY_MS LOSS_PCT TAG: bench/delayline in namespace NS between its
# interfaces A and B, holding each frame DELAY_MS each way and dropping LOSS_PCT % of them;
# sets DL_PID once it is ready. Its counters go to $WORK/delayline-TAG.log.
start_delayline() {
  local ns=$1 a=$2 b=$3 delay=$4 loss=$5 tag=$6
  [ ${#CHRT[@]} -gt 0 ] || { nsx "$ns" chrt -f 50 true 2>/dev/null && CHRT=(chrt -f 50); } || true
  ip netns exec "$P-$ns" "${CHRT[@]}" "$DELAYLINE" --a "$a" --b "$b" --delay-ms "$delay" \
    --loss "$(python3 -c "print($loss / 100)")" >"$WORK/delayline-$tag.out" 2>"$WORK/delayline-$tag.log" &
  DL_PID=$!
  PIDS+=("$DL_PID")
  wait_for "$WORK/delayline-$tag.out" 'delayline ready'
}

# delayline_faults TAG: after the delay line stopped, the drops it did not choose (a queue
# overflow, the kernel's drops, send errors), which would make the link worse than it says;
# prints nothing when there were none.
delayline_faults() {
  grep -oE '(queue overflow|kernel drops|send errors|truncated) [1-9][0-9]*' "$WORK/delayline-$1.log" |
    paste -sd, - || true
}
