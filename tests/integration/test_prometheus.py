"""A real Prometheus scrapes a running worker; deploy/ configs are valid and name real metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.local.kafka import free_port

from .harness import Worker, event, poll, produce, worker_env

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: `make tools` installs Debian's prometheus package"
    return path


@pytest.fixture(scope="module")
def scraped(
    kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, dict[str, str], str]]:
    unique = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("prom")
    env = worker_env(kafka_broker, unique, tmp / "data", FEEDBACK_HIGH_VALUE_REVENUE="100",
                     FEEDBACK_CHURN_KPI_INTERVAL="2")  # fmt: skip
    prometheus = _tool("prometheus")  # before a worker is started: a missing tool leaks none
    worker = Worker(env, tmp / "worker.log")
    prom: subprocess.Popen[bytes] | None = None
    try:
        worker.start()
        prom_port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: feedback-worker\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{worker.port}']}}]\n"
        )
        log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        prom = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        yield worker, env, f"http://127.0.0.1:{prom_port}"
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(30)
        worker.stop()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except OSError:
        return []
    return list(body["data"]["result"]) if body.get("status") == "success" else []


def scalar(base: str, promql: str) -> float | None:
    result = query(base, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_reads_the_workers_domain_metrics(
    scraped: tuple[Worker, dict[str, str], str],
) -> None:
    worker, env, prom = scraped
    bootstrap = env["FEEDBACK_BROKER"].removeprefix("kafka://")
    s, p = env["FEEDBACK_TOPIC_SURVEYS"], env["FEEDBACK_TOPIC_PURCHASES"]
    seg = {"region": "eu", "tier": "gold"}
    records = [
        (p, b"m1", event("purchase", "m1-p", "m1", "2026-05-01T00:00:00Z", order_id="o",
                         amount="500", currency="EUR", segment=seg)),
        (s, b"m1", event("survey", "m1-s1", "m1", "2026-05-02T00:00:00Z", score=10, segment=seg)),
        (s, b"m1", event("survey", "m1-s2", "m1", "2026-05-03T00:00:00Z", score=1, segment=seg)),
        (s, b"m2", event("survey", "m2-s1", "m2", "2026-05-03T00:00:00Z", score=8)),
        (s, b"m2", b"not json"),
    ]  # fmt: skip
    asyncio.run(produce(bootstrap, records))
    poll(lambda: scalar(prom, "sum(feedback_events_total)") == 4, 60,
         "Prometheus to scrape 4 processed events", worker)  # fmt: skip
    assert scalar(prom, 'sum(feedback_dead_letters_total{reason="not_json"})') == 1
    assert scalar(prom, 'sum(feedback_alerts_total{rule="detractor"})') == 1
    assert scalar(prom, "sum(feedback_event_latency_seconds_count)") == 4
    # The event-loop probe looks 20 times a second, whatever the traffic.
    assert (scalar(prom, "feedback_event_loop_lag_seconds_count") or 0) > 0
    poll(lambda: scalar(prom, 'feedback_segment_nps{segment="overall",window="30d"}') == 0.0,
         60, "segment NPS gauge (overall 30d: 1 P, 1 Pa, 1 D = 0)", worker)  # fmt: skip
    assert scalar(prom, 'feedback_segment_responses{segment="region:eu",window="7d"}') == 2
    poll(lambda: scalar(prom, "sum(feedback_customers)") == 2, 60, "customers gauge", worker)
    assert scalar(prom, 'feedback_customers_by_tier{tier="A"}') == 1
    assert scalar(prom, "sum(faust_messages_received_total)") is not None
    labels = {k for r in query(prom, '{__name__=~"feedback_.*"}') for k in r["metric"]}
    assert not labels & {"customer_id", "customer", "key"}, "no customer id as a label"


def _metric_names(text: str) -> set[str]:
    names = set(re.findall(r"\b((?:feedback|faust)_[a-z0-9_]+)", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_dashboard_and_rules_use_only_metrics_the_worker_exports(
    scraped: tuple[Worker, dict[str, str], str],
) -> None:
    worker, _, _ = scraped
    used = _metric_names((DEPLOY / "prometheus" / "rules.yml").read_text())
    used |= _metric_names((DEPLOY / "grafana" / "dashboards" / "feedback.json").read_text())
    assert "feedback_consumer_lag_records" in used and "feedback_events_total" in used

    def exported() -> set[str]:
        _, text = worker.get("/metrics")
        found = set()
        for line in str(text).splitlines():
            if line and not line.startswith("#"):
                found.add(
                    re.sub(r"_(bucket|count|sum|created)$", "", line.split("{")[0].split()[0])
                )
        return found

    missing: set[str] = set()

    def all_present() -> bool:
        nonlocal missing
        missing = used - exported()
        return not missing

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all_present():
        time.sleep(0.5)
    assert not missing, f"metrics used in deploy/ but not exported: {sorted(missing)}"


def test_promtool_accepts_config_and_rules() -> None:
    promtool = _tool("promtool")
    for args in (["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["check", "rules", str(DEPLOY / "prometheus" / "rules.yml")]):  # fmt: skip
        res = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_deploy_files_parse() -> None:
    for path in DEPLOY.rglob("*.y*ml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, path
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"kafka", "worker-1", "worker-2", "prometheus", "grafana"} <= set(compose["services"])
    kinds = {d["kind"] for d in yaml.safe_load_all((DEPLOY / "k8s" / "feedback.yaml").read_text())}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"} <= kinds
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "feedback.json").read_text())
    assert dash["panels"] and all(p["targets"][0]["expr"] for p in dash["panels"])
