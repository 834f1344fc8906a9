#!/usr/bin/env bash
# Tessera in one command: builds the release binaries, starts a tracker and three peers in a
# temp dir on 127.0.0.1, shares a generated file from one peer and fetches it on the other
# two (the last one from both earlier holders at once), with progress bars, then checks
# every copy against sha256sum.
#
#   scripts/demo.sh                 # 256 MiB demo file
#   DEMO_SIZE=1G scripts/demo.sh    # any size `head -c` understands
#   DEMO_KEEP=1 scripts/demo.sh     # keep the temp dir and leave nothing running
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${DEMO_SIZE:-256M}
RATE=${DEMO_RATE:-200M}  # a download cap, so the progress bars are there long enough to see
# Cargo's own progress stays on: a first release build compiles a few hundred crates and
# takes several minutes (a quarter of an hour on a small two-core machine); later runs take seconds.
echo "building the release binaries (the first build takes several minutes)..."
cargo build --release --locked -p tracker -p peer
BIN=$PWD/target/release
DEMO=$(mktemp -d -t tessera-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -z "${DEMO_KEEP:-}" ]; then rm -rf "$DEMO"; else echo "kept $DEMO"; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "tracker (SQLite at $DEMO/tracker.db)"
"$BIN/tracker" --listen 127.0.0.1:0 --database-url "sqlite://$DEMO/tracker.db?mode=rwc" \
  >"$DEMO/tracker.out" 2>"$DEMO/tracker.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$DEMO/tracker.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '/listening on/ {print $NF}' "$DEMO/tracker.out")
[ -n "$URL" ] || { cat "$DEMO/tracker.log"; echo "tracker did not start" >&2; exit 1; }
echo "tracker at $URL"
export PEER_TRACKER=$URL

peer() { local who=$1; shift; "$BIN/peer" --home "$DEMO/$who" "$@"; }

for who in alice bob carol; do
  step "peer $who: register and serve"
  echo "demo-password-$who" | peer "$who" register --user "$who" --password-stdin
  # The binary itself in the background (not the `peer` function, whose subshell would be
  # the pid recorded and killed, leaving the node running).
  "$BIN/peer" --home "$DEMO/$who" serve --listen 127.0.0.1:0 >"$DEMO/$who.out" 2>"$DEMO/$who.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'serving on' "$DEMO/$who.out" 2>/dev/null && break; sleep 0.1; done
  cat "$DEMO/$who.out"
done

step "alice shares a $SIZE file"
mkdir -p "$DEMO/share"
head -c "$SIZE" /dev/urandom >"$DEMO/share/demo-video.mkv"
peer alice index "$DEMO/share"

step "bob searches and fetches it"
peer bob search demo
peer bob get demo-video.mkv --output "$DEMO/bob-downloads" --max-download-rate "$RATE"

step "carol fetches it from alice and bob at once"
peer carol get demo-video.mkv --output "$DEMO/carol-downloads" --max-download-rate "$RATE"

step "every copy is byte-identical"
sha256sum "$DEMO/share/demo-video.mkv" "$DEMO/bob-downloads/demo-video.mkv" "$DEMO/carol-downloads/demo-video.mkv"
n=$(sha256sum "$DEMO/share/demo-video.mkv" "$DEMO"/*-downloads/demo-video.mkv | awk '{print $1}' | sort -u | wc -l)
[ "$n" = 1 ] || { echo "copies differ" >&2; exit 1; }

step "what the tracker knows"
peer carol peers
curl -fsS "$URL/api/v1/stats" 2>/dev/null && echo || true
echo "demo done"
