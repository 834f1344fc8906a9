#!/usr/bin/env bash
# Folders on loopback: time to share (`peer index DIR`) and to fetch (`peer get NAME`) a
# folder of many small files and one of a few large files, beside rsync from an rsync
# daemon on 127.0.0.1 (one TCP stream, no encryption: the cheapest tree copy there is) and
# a plain `cp -r` (the disk's own floor). Every copy is compared with the source tree.
#
#   bench/folders.sh [--small N] [--large N] [--large-size SIZE_MIB] [--runs N] [--append]
#   bench/folders.sh --smoke      # 50 small files and one of 2 MiB, once (.ci/run)
#
# Release build (built here), or the binaries in $BIN when it is set (the smoke uses the
# debug ones the tests built). --append adds the table to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=1000
LARGE=4
LARGE_MIB=64
RUNS=2
APPEND=
SMOKE=
while [ $# -gt 0 ]; do
  case $1 in
    --small) SMALL=$2; shift 2 ;;
    --large) LARGE=$2; shift 2 ;;
    --large-size) LARGE_MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --append) APPEND=1; shift ;;
    --smoke) SMOKE=1; SMALL=50; LARGE=1; LARGE_MIB=2; RUNS=1; BIN=${BIN:-target/debug}; shift ;;
    *) echo "usage: $0 [--small N] [--large N] [--large-size MIB] [--runs N] [--append]" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d -t tessera-folders.XXXXXX)
RES=$WORK/results
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT
HAVE_RSYNC=1
if ! command -v rsync >/dev/null; then
  [ -n "$SMOKE" ] || die "rsync is needed (apt-get install rsync)"
  say "no rsync: the smoke checks peer get alone"
  HAVE_RSYNC=
fi
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -z "${BIN:-}" ]; then
  say "building (release)"
  cargo build --release -q -p tracker -p peer
  BIN=target/release
fi
BIN=$(cd "$BIN" && pwd)

# The two folders: many small files in 20 directories (sizes 1 to 16 KiB, an empty
# directory and an empty file among them), and a few large ones.
say "making the folders"
python3 - "$WORK/src" "$SMALL" "$LARGE" "$LARGE_MIB" <<'EOF'
import os, random, sys
root, small, large, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(7)
s = os.path.join(root, "small")
for i in range(small):
    d = os.path.join(s, f"dir{i % 20:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:05d}.dat"), "wb") as f:
        f.write(os.urandom(rnd.randint(1024, 16384)))
os.makedirs(os.path.join(s, "empty dir"), exist_ok=True)
open(os.path.join(s, "empty.txt"), "wb").close()
l = os.path.join(root, "large")
os.makedirs(l, exist_ok=True)
for i in range(large):
    with open(os.path.join(l, f"part{i}.bin"), "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
EOF

same_tree() { diff -r "$1" "$2" >/dev/null || die "the copy $2 differs from $1"; }

start_tracker tracker
new_home alice
start_node alice

# rsync daemon on loopback serving the source folders.
if [ -n "$HAVE_RSYNC" ]; then
RSYNC_PORT=$(free_port)
cat >"$WORK/rsyncd.conf" <<EOF
use chroot = no
pid file = $WORK/rsyncd.pid
[src]
path = $WORK/src
read only = yes
EOF
rsync --daemon --no-detach --config="$WORK/rsyncd.conf" --port="$RSYNC_PORT" --address=127.0.0.1 \
  >"$WORK/rsyncd.log" 2>&1 &
PIDS+=("$!")
sleep 0.5
fi

for kind in small large; do
  files=$(find "$WORK/src/$kind" -type f | wc -l)
  bytes=$(du -sb "$WORK/src/$kind" | cut -f1)
  # Sharing: the first index hashes every file; a second finds them all unchanged.
  t0=$(now)
  peer_cmd alice index "$WORK/src/$kind" >/dev/null
  put "$kind.index" "$(since "$t0")"
  t0=$(now)
  peer_cmd alice index "$WORK/src/$kind" >/dev/null
  put "$kind.reindex" "$(since "$t0")"
  for r in $(seq "$RUNS"); do
    name="bob$kind$r"
    new_home "$name"
    fresh "$WORK/out/$name"
    t0=$(now)
    peer_cmd "$name" get "$kind" -o "$WORK/out/$name" >/dev/null 2>"$WORK/$name.err" ||
      die "peer get failed: $(cat "$WORK/$name.err")"
    put "$kind.get" "$(since "$t0")"
    same_tree "$WORK/src/$kind" "$WORK/out/$name/$kind"
    # Again: every file is there and identical.
    t0=$(now)
    peer_cmd "$name" get "$kind" -o "$WORK/out/$name" >/dev/null
    put "$kind.get_again" "$(since "$t0")"
    if [ -n "$HAVE_RSYNC" ]; then
      fresh "$WORK/out/rsync$r"
      t0=$(now)
      rsync -a "rsync://127.0.0.1:$RSYNC_PORT/src/$kind" "$WORK/out/rsync$r/"
      put "$kind.rsync" "$(since "$t0")"
      same_tree "$WORK/src/$kind" "$WORK/out/rsync$r/$kind"
    fi
    fresh "$WORK/out/cp$r"
    t0=$(now)
    cp -r "$WORK/src/$kind" "$WORK/out/cp$r/"
    put "$kind.cp" "$(since "$t0")"
  done
  put "$kind.files" "$files"
  put "$kind.bytes" "$bytes"
done

table=$(python3 - "$RES" <<'EOF'
import sys
vals = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    vals.setdefault(k, []).append(float(v))
best = lambda k: min(vals.get(k, [float("nan")]))
out = ["| folder | files | size | index | index again | get | get again | rsync (daemon) | cp -r | get / rsync |",
       "|---|---|---|---|---|---|---|---|---|---|"]
for kind in ("small", "large"):
    n, b = int(best(f"{kind}.files")), best(f"{kind}.bytes")
    size = f"{b / 2**20:.1f} MiB"
    g, r = best(f"{kind}.get"), best(f"{kind}.rsync")
    out.append(f"| {kind} | {n} | {size} | {best(f'{kind}.index'):.2f} s | {best(f'{kind}.reindex'):.2f} s | "
               f"{g:.2f} s | {best(f'{kind}.get_again'):.2f} s | {r:.2f} s | {best(f'{kind}.cp'):.2f} s | {g / r:.2f}× |")
print("\n".join(out))
EOF
)
report="## Folders on loopback: run of $(date -u '+%Y-%m-%d %H:%M UTC') (\`bench/folders.sh\`)

$(machine)

Best of $RUNS gets (each by a new user into an empty directory, then again into the full one);
one tracker on SQLite, one seed node, release build. \`get\` includes its listing's fetch and
check, one Locate per file, eight files at a time.

$table"
echo "$report"
if [ -n "$APPEND" ]; then
  printf '\n%s\n' "$report" >>BENCHMARKS.md
fi
