#!/usr/bin/env bash
# Browser test of bert_serve's demo page: starts bert_serve on a free loopback port with two
# synthetic classifiers, drives the page in headless Chromium (demo_browser.mjs, DevTools protocol
# over a pipe), and saves a screenshot to BUILD_DIR/test-artifacts/serve_demo.png.
# Exit 77 (ctest: skipped) with a message when chromium, node or ../shared is absent.
#   demo_browser_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
SRC=$1
BUILD=$2
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
SHARED=${BERT_SHARED_DIR:-$SRC/../shared}
skip() { echo "SKIP: $*"; exit 77; }
[ -x "$CHROMIUM" ] || skip "no chromium at $CHROMIUM (scripts/setup.sh installs Debian's chromium)"
command -v node >/dev/null || skip "node is not installed"
VOCAB=$SHARED/models/bert-base-uncased-tokenizer/vocab.txt
[ -f "$VOCAB" ] || skip "../shared is absent (set BERT_SHARED_DIR)"

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
for m in tiny mini; do
  "$BUILD/tools/convert_weights" --synthetic "bert-$m" --architecture BertForSequenceClassification \
    "$TMP/$m.bert" --vocab "$VOCAB" >/dev/null || { echo "FAIL: convert_weights"; exit 1; }
done
printf 'sentence\tlabel\nit is a charming and often affecting journey . \t1\nunflinchingly bleak and desperate \t0\n' > "$TMP/dev.tsv"
"$BUILD/tools/bert_serve" --port 0 --threads 2 --model bert-tiny="$TMP/tiny.bert" --model bert-mini="$TMP/mini.bert" \
  --demo-data "$TMP/dev.tsv" --web-dir "$SRC/web" > "$TMP/serve.out" 2> "$TMP/serve.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/serve.out" && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$TMP/serve.out" | head -1)
[ -n "$URL" ] || { echo "FAIL: bert_serve did not start"; cat "$TMP/serve.err"; exit 1; }
for _ in $(seq 100); do  # /health says 200 once the models are loaded
  node -e 'fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$URL/health" && break
  sleep 0.1
done
mkdir -p "$BUILD/test-artifacts"
node "$SRC/tests/browser/demo_browser.mjs" "$URL/" "$BUILD/test-artifacts/serve_demo.png" 2 "$CHROMIUM"
