#!/usr/bin/env bash
# Runs the test suite on the Node that scripts/setup.sh chose and ends with one plain line,
# `N passed, N failed[, N skipped]`, counted from tap's own summary.
# Privileged tests need root; with WEFT_REQUIRE_PRIVILEGED=1 a missing prerequisite fails them.
# Extra arguments go to tap (e.g. a test file).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.weft/bin:$PATH"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
node node_modules/tap/dist/esm/run.mjs --reporter=tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
node -e '
const text = require("fs").readFileSync(process.argv[1], "utf8")
// tap closes with a comment like: # { total: 12, pass: 11, fail: 1, skip: 2 }
const m = [...text.matchAll(/^# \{ (total: \d+[^}]*)\}$/gm)].pop()
const n = (k) => { const r = m && new RegExp(k + ": (\\d+)").exec(m[1]); return r ? Number(r[1]) : 0 }
const failed = n("fail") + (m ? 0 : 1)
const skipped = n("skip") + n("todo")
console.log(`${n("pass")} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""))
' "$log"
exit "$status"
