#!/usr/bin/env bash
# The test command (`npm test`): installs the real peers when missing, type-checks, runs vitest,
# and ends with the plain summary line `tests: N passed, N failed` from vitest's own JSON report.
set -uo pipefail
cd "$(dirname "$0")/.."
bash test/setup/install-tools.sh || exit 1
npx tsc --noEmit || { echo "tests: 0 passed, 1 failed (typecheck)"; exit 1; }
# The tests spawn bin/snapnbd as users run it: from the compiled dist/ (npm ci builds it too).
npm run --silent build || { echo "tests: 0 passed, 1 failed (build)"; exit 1; }
report=$(mktemp /tmp/snapnbd-vitest.XXXXXX.json)
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
rc=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
  // A file that fails before any test runs (an import error) counts no failed test: say so.
  const broken = r.testResults.filter((f) => f.status === "failed" && f.assertionResults.every((a) => a.status !== "failed")).length;
  if (broken) console.log(`(${broken} test files failed to run)`);
' "$report" || { echo "tests: 0 passed, 1 failed (no report)"; rc=1; }
rm -f "$report"
exit $rc
