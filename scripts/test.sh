#!/usr/bin/env bash
# Set-up + the whole test suite (unit, integration and slow): what CI runs.
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow"   or   scripts/test.sh tests/unit -x
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

"$REPO/scripts/bootstrap.sh" || { echo "test.sh: bootstrap failed; not running tests" >&2; exit 2; }

echo "==> .venv/bin/pytest $*"
"$REPO/.venv/bin/pytest" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5): treating that as a failure" >&2
  exit 1
fi
exit "$rc"
