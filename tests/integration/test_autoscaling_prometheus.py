"""The customized metric of auto scaling: a PromQL instant query against a real Prometheus
(Debian's, started on a loopback port with an empty scrape config; stopped by pid)."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import httpx
import pytest

from harness import free_port, kill_pid
from orchestrator.autoscaler import prometheus_query
from orchestrator.autoscaling_models import CustomizedMetric

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture
def prometheus_url(tmp_path):
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global: {scrape_interval: 15s}\nscrape_configs: []\n")
    log = open(tmp_path / "prometheus.log", "w")
    p = subprocess.Popen([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert p.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        kill_pid(p)
        log.close()


def test_promql_scalar_one_series_and_anything_else_is_no_data(prometheus_url):
    def q(query: str, url: str = prometheus_url) -> float | None:
        return asyncio.run(prometheus_query(CustomizedMetric(prometheusUrl=url, query=query)))

    assert q("vector(7)") == 7.0
    assert q("scalar(vector(3.5))") == 3.5
    assert q('vector(1) or label_replace(vector(2), "a", "b", "", "")') is None  # two series: ambiguous
    assert q("absent_metric_of_nothing") is None  # no series
    assert q("sum(") is None  # a bad query
    assert q("vector(1)", f"http://127.0.0.1:{free_port()}") is None  # nothing listening
