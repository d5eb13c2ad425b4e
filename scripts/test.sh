#!/usr/bin/env bash
# Set-up + the whole test suite (unit, integration and slow): what CI runs.
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow"   or   scripts/test.sh tests/unit -x
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

"$REPO/scripts/bootstrap.sh" || { echo "test.sh: bootstrap failed; not running tests" >&2; exit 2; }

# Lint and types first (seconds): a finding fails the run like a failing test. Skipped when
# pytest arguments are given (a developer running a subset), always run in CI (no arguments).
if [ "$#" -eq 0 ]; then
  echo "==> ruff check orchestrator agent dockyard"
  "$REPO/.venv/bin/ruff" check orchestrator agent dockyard || { echo "test.sh: ruff found problems" >&2; exit 1; }
  echo "==> mypy (orchestrator agent dockyard, configured in pyproject.toml)"
  "$REPO/.venv/bin/mypy" || { echo "test.sh: mypy found problems" >&2; exit 1; }
fi

echo "==> .venv/bin/pytest $*"
"$REPO/.venv/bin/pytest" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5): treating that as a failure" >&2
  exit 1
fi
# CI (no arguments): a representative set of integration tests again with the store on PostgreSQL (the unit and
# store tests already ran on both backends above): the foundation, a lost store, the secrets leak check on the
# database's tables and the PostgreSQL counterparts of the SQLite-file chaos tests. About 3 minutes. The whole
# suite that way: DOCKYARD_TEST_STORE=postgresql .venv/bin/pytest (docs/high-availability.md, "Tested on").
if [ "$#" -eq 0 ] && [ "$rc" -eq 0 ]; then
  PG_SET=(tests/integration/test_foundation.py tests/integration/test_chaos_store.py
          tests/integration/test_secrets_docker.py tests/integration/test_security.py
          -k "three_replicas or orchestrator_restart or agent_restart or run_wait or postgresql or secret_reaches or (fresh_store and secure)")
  echo "==> DOCKYARD_TEST_STORE=postgresql .venv/bin/pytest ${PG_SET[*]}"
  DOCKYARD_TEST_STORE=postgresql "$REPO/.venv/bin/pytest" "${PG_SET[@]}"
  rc=$?
fi
exit "$rc"
