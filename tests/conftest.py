"""Shared pytest set-up.

* Tests under tests/integration/ are marked ``integration`` automatically and require the
  session fixture ``infra`` (real dockerd, Mosquitto on 127.0.0.1:1883, the offline image).
  When those are missing the tests FAIL with a clear message instead of skipping: a skipped
  integration test in CI would hide a defect. Run scripts/bootstrap.sh to provide them.
* ``dockyard_env`` (alias ``harness``) gives a test its own cluster, store, port and log dir,
  and always cleans up (see tests/integration/harness.py and docs/testing.md).
* When a test fails, the logs of the orchestrator/agents it started are attached to the report.

tests/unit/ needs none of this.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

_INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
# Let integration tests write `from harness import Harness, wait_for` (and `from testbed import ...`).
if str(_INTEGRATION_DIR) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION_DIR))

_HARNESS_KEY = pytest.StashKey[list]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def infra() -> None:
    """Fail (not skip) when dockerd, the broker or the test image are unavailable."""
    from harness import check_infra

    problems = check_infra()
    if problems:
        pytest.fail(
            "integration infrastructure is missing:\n  - " + "\n  - ".join(problems)
            + "\nRun scripts/bootstrap.sh (as root) or scripts/test.sh, which installs and starts it.",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _integration_needs_infra(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("infra")


def store_backend() -> str:
    """The integration tests' store: DOCKYARD_TEST_STORE=postgresql runs them on a real PostgreSQL (pg_server)."""
    value = os.environ.get("DOCKYARD_TEST_STORE", "sqlite").lower()
    if value not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"DOCKYARD_TEST_STORE={value!r}: use sqlite or postgresql")
    return value


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 15 for this test session (tests/integration/pgserver.py); fails when not installed."""
    from pgserver import PgServer

    server = PgServer()
    if server.missing():
        pytest.fail(server.missing() or "", pytrace=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh database on the session's PostgreSQL."""
    return pg_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty store is, on each backend: a SQLite file's path or a fresh PostgreSQL database's URL.
    Open it with ``orchestrator.store.open_store(store_at, exclusive=False)``; opening it again is a restart."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "dockyard.db")


@pytest.fixture
def dockyard_env(request: pytest.FixtureRequest, infra: None, tmp_path: Path):
    """A :class:`harness.Harness` for this test; cleaned up afterwards whatever happens.

    The test gets a broker of its own without anonymous access (harness.secure_broker): its orchestrator and
    agents log in with their own credentials, as on a real installation. ``@pytest.mark.anonymous_broker("why")``
    opts a test out (the shared anonymous broker on 127.0.0.1:1883); so does DOCKYARD_TEST_SECURE_BROKER=0."""
    from harness import Harness, secure_broker, secure_by_default

    h = Harness(workdir=tmp_path / "dockyard")
    if store_backend() == "postgresql":
        h.store = request.getfixturevalue("pg_url")
    request.node.stash.setdefault(_HARNESS_KEY, []).append(h)
    with contextlib.ExitStack() as stack:
        if secure_by_default() and request.node.get_closest_marker("anonymous_broker") is None:
            h.mqtt_url = stack.enter_context(secure_broker(h.workdir)).url
        try:
            yield h
        finally:
            problems = h.cleanup()  # before the broker stops
            if problems:
                # Leaking state into the next test is a defect of its own: make it visible.
                pytest.fail("cleanup of " + h.cluster + " failed:\n  - " + "\n  - ".join(problems), pytrace=False)


@pytest.fixture
def harness(dockyard_env):
    """Alias of ``dockyard_env``."""
    return dockyard_env


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for h in item.stash.get(_HARNESS_KEY, []):
            for title, text in h.log_sections():
                rep.sections.append((f"{title} [{rep.when}]", text))
