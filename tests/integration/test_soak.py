"""Issue 16: a 3-minute soak (bench/soak.py --minutes 3) on the multi-host test bed is part of CI:
random churn under the invariant checker; 0 violations, 0 leaks, RSS growth after warm-up <= 10 %."""
from __future__ import annotations

import subprocess
import sys

import pytest
from harness import REPO, on_postgresql

pytestmark = pytest.mark.slow


@pytest.mark.timeout(960)  # the bench's own 900 s (it may first wait for the test bed's machine-wide lock)
def test_three_minute_soak():
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "3", "--warmup", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except BaseException:
        proc.terminate()  # SIGTERM: the bench cleans up (its broker, the test bed, its PostgreSQL); SIGKILL would not
        proc.communicate(timeout=120)
        raise
    cp = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    print(cp.stdout[-3000:])
    figures = dict(line.split(": ", 1) for line in cp.stdout.splitlines() if ": " in line and not line.startswith("["))
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert figures["store"] == ("postgres" if on_postgresql() else "sqlite"), figures  # the harness's store
    assert int(figures["violations"]) == 0, cp.stdout[-3000:]
    assert int(figures["leaked"]) == 0, cp.stdout[-3000:]
    assert int(figures["actions"]) >= 20, figures
    assert float(figures["orchestrator_rss_growth_percent"]) <= 10, figures
    assert float(figures["agent_rss_growth_percent"]) <= 10, figures
