#!/usr/bin/env bash
# Fuzzes the tracker's REST API against its own OpenAPI document with schemathesis:
# every answer must be documented, match its schema and content type, and never be a 5xx.
#
# Builds the tracker and peer (debug), starts the tracker on 127.0.0.1 with a temp SQLite
# database and one user, shares two files from a peer, runs schemathesis (installed into
# a venv under target/ when missing), stops the tracker and exits non-zero on any failure.
#
#   SCHEMATHESIS_EXAMPLES=N   test cases per operation (default 100)
#   SCHEMATHESIS_SEED=N       reproduce a run
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=target/schemathesis-venv
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-100}

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

cargo build --quiet -p tracker -p peer
TRACKER=target/debug/tracker
PEER=target/debug/peer

TMP=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

export TRACKER_DATABASE_URL="sqlite://$TMP/tracker.db?mode=rwc"
export TRACKER_LISTEN=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RUST_LOG=${RUST_LOG:-warn}
BASE=http://$TRACKER_LISTEN

echo 'pw-of-fuzz' | "$TRACKER" user add fuzz >/dev/null
"$TRACKER" >"$TMP/tracker.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -sf "$BASE/healthz" >/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/tracker.log"; exit 1; }
  sleep 0.1
done

# Two shared files, so the file routes have something to find (and their links to follow).
head -c 3000000 /dev/urandom >"$TMP/film.mkv"
echo 'hello' >"$TMP/notes.txt"
echo 'pw-of-sharer' | "$PEER" --home "$TMP/sharer" --tracker "$BASE" register --user sharer --password-stdin >/dev/null
"$PEER" --home "$TMP/sharer" --tracker "$BASE" index "$TMP/film.mkv" "$TMP/notes.txt" >/dev/null

# A real session, so DELETE /api/v1/sessions also meets a valid token once.
TOKEN=$(curl -sf -H 'content-type: application/json' \
  -d '{"user":"fuzz","password":"pw-of-fuzz"}' "$BASE/api/v1/sessions" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

# Run from target/schemathesis, where schemathesis keeps its replay cache and reports.
status=0
ST=$PWD/$VENV/bin/st
mkdir -p target/schemathesis
(cd target/schemathesis && "$ST" run "$BASE/api/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
  --max-examples "$EXAMPLES" \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  --phases coverage,fuzzing,stateful \
  --request-timeout 10 \
  --header "Authorization: Bearer $TOKEN" \
  --generation-database none \
  --no-color) || status=$?

if grep -q "panicked" "$TMP/tracker.log"; then
  echo "the tracker panicked:"
  grep -A5 "panicked" "$TMP/tracker.log"
  status=1
fi
exit $status
