"""deploy/: structure of the compose file, the Collector config and the Grafana provisioning.

Docker, the Collector, Jaeger and Grafana cannot run on the test machines, so these checks read
the files: the compose file valid against the Compose Specification's JSON schema (as vendored
by check-jsonschema), every image pinned, every mounted file present, the Collector's components
named as the contrib distribution names them and wired into pipelines, Grafana's datasource uids,
refIds and conditions consistent, the Grafana alert rules using the Prometheus rules' PromQL
verbatim, and every ``scopewatch_*`` name in a query being one the contract (DESIGN.md section 3)
produces.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

from scopewatch import semconv
from scopewatch.telemetry.metrics import Instruments
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
COLLECTOR = DEPLOY / "otel-collector" / "config.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = DEPLOY / "prometheus" / "rules" / "scopewatch.rules.yml"
GRAFANA = DEPLOY / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
GRAFANA_ALERTS = GRAFANA / "provisioning" / "alerting" / "scopewatch-alerts.yaml"
DASHBOARD = GRAFANA / "dashboards" / "scopewatch.json"

PROMETHEUS_UID = "scopewatch-prometheus"
JAEGER_UID = "scopewatch-jaeger"

# Component types of the otelcol-contrib distribution used here, as its manifest and the
# components' READMEs name them (`otlp_grpc` is the exporter's name since v0.144.0; `otlp` and
# `otlphttp` remain deprecated aliases).
KNOWN_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch"},
    "exporters": {"otlp_grpc", "otlp_http", "otlp", "otlphttp", "prometheus", "debug"},
    "connectors": {"spanmetrics"},
    "extensions": {"health_check"},
}
CONNECTOR_SIGNALS = {"spanmetrics": ("traces", "metrics")}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def normalize(promql: str) -> str:
    return " ".join(promql.split())


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/")[0])


# --- docker compose -----------------------------------------------------------------------


def test_compose_services_and_ports() -> None:
    services = load(COMPOSE)["services"]
    assert set(services) == {"otel-collector", "jaeger", "prometheus", "grafana", "example-app"}
    published = {
        name: {int(str(p).split(":")[0]) for p in service.get("ports", [])}
        for name, service in services.items()
    }
    assert {4317, 4318, 8889} <= published["otel-collector"]
    assert published["jaeger"] == {16686}
    assert published["prometheus"] == {9090}
    assert published["grafana"] == {3000}


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate with check-jsonschema's vendored copy of the Compose Specification schema."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr

    broken = load(COMPOSE)
    broken["services"]["grafana"]["restart"] = ["always"]
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = check_compose_schema(tmp_path / "compose.yaml")
    assert result.returncode != 0
    assert "$.services.grafana.restart" in result.stdout


def test_compose_images_are_pinned() -> None:
    services = load(COMPOSE)["services"]
    images = [s["image"] for s in services.values() if "image" in s]
    dockerfile = (DEPLOY / "app" / "Dockerfile").read_text()
    images += re.findall(r"(?m)^FROM\s+(\S+)", dockerfile)
    assert len(images) == 5
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag, f"{image} has no tag"
        assert "latest" not in tag, image
        assert re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*", tag), f"{image}: pin an exact version"


def test_compose_mounts_and_build_inputs_exist() -> None:
    services = load(COMPOSE)["services"]
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert source.startswith("./"), f"{name}: {volume} is not a bind mount of deploy/"
            path = DEPLOY / source
            assert path.exists(), f"{name}: {source} does not exist"
            assert path.is_file() == bool(Path(target).suffix), f"{name}: {volume}"
            mounts += 1
    assert mounts >= 5

    build = services["example-app"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    sources = [
        source
        for line in re.findall(r"(?m)^COPY\s+(.+)$", dockerfile.read_text())
        for source in line.split()[:-1]
    ]
    assert "src" in sources
    for source in sources:
        assert (context / source).exists(), f"COPY {source}: missing in the build context"


def test_compose_commands_point_at_mounted_configs() -> None:
    services = load(COMPOSE)["services"]
    collector = services["otel-collector"]
    (config,) = [arg.split("=", 1)[1] for arg in collector["command"] if arg.startswith("--config")]
    assert config in {v.split(":")[1] for v in collector["volumes"]}

    prometheus = services["prometheus"]
    (config,) = [a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config")]
    targets = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert (DEPLOY / targets[config]).resolve() == PROMETHEUS_CONFIG
    rule_dir = Path(config).parent / "rules"
    assert (DEPLOY / targets[str(rule_dir)]).resolve() == PROMETHEUS_RULES.parent

    app_env = services["example-app"]["environment"]
    endpoint = urllib.parse.urlsplit(app_env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector"
    assert app_env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert endpoint.port == 4318


# --- collector ----------------------------------------------------------------------------


def test_collector_components_are_known_and_wired() -> None:
    config = load(COLLECTOR)
    defined: dict[str, set[str]] = {}
    for section, known in KNOWN_COMPONENTS.items():
        defined[section] = set(config.get(section) or {})
        for component in defined[section]:
            assert component.split("/")[0] in known, f"unknown {section[:-1]} {component}"

    used: dict[str, set[str]] = {section: set() for section in KNOWN_COMPONENTS}
    pipelines = config["service"]["pipelines"]
    for pipeline_id, pipeline in pipelines.items():
        for role in ("receivers", "processors", "exporters"):
            for component in pipeline.get(role, []):
                if role != "processors" and component in defined["connectors"]:
                    used["connectors"].add(component)
                    continue
                assert component in defined[role], f"{pipeline_id}: {component} not defined"
                used[role].add(component)
    used["extensions"] = set(config["service"].get("extensions", []))
    for section in KNOWN_COMPONENTS:
        assert used[section] == defined[section], f"unused {section}"

    for connector in defined["connectors"]:
        source, sink = CONNECTOR_SIGNALS[connector.split("/")[0]]
        assert connector in pipelines[source]["exporters"]
        assert connector in pipelines[sink]["receivers"]
    assert "otlp" in pipelines["traces"]["receivers"]
    assert "otlp" in pipelines["metrics"]["receivers"]
    assert "prometheus" in pipelines["metrics"]["exporters"]


def test_collector_endpoints_match_compose_and_prometheus() -> None:
    config = load(COLLECTOR)
    services = load(COMPOSE)["services"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert port_of(protocols["grpc"]["endpoint"]) == 4317
    assert port_of(protocols["http"]["endpoint"]) == 4318

    (jaeger,) = [v for k, v in config["exporters"].items() if k.startswith("otlp_grpc")]
    host, port = jaeger["endpoint"].rsplit(":", 1)
    assert host == "jaeger" and port == "4317"
    assert jaeger["tls"]["insecure"] is True

    exporter = config["exporters"]["prometheus"]
    assert exporter["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    (scrape,) = [
        job
        for job in load(PROMETHEUS_CONFIG)["scrape_configs"]
        if job["job_name"] == "otel-collector"
    ]
    assert scrape["honor_labels"] is True  # keep the app's service.name as `job`
    (target,) = scrape["static_configs"][0]["targets"]
    assert target.split(":")[0] in services
    assert port_of(target) == port_of(exporter["endpoint"])


def test_spanmetrics_dimensions_are_contract_attributes() -> None:
    spanmetrics = load(COLLECTOR)["connectors"]["spanmetrics"]
    names = {dimension["name"] for dimension in spanmetrics["dimensions"]}
    assert names == {
        semconv.SCOPE_OUTCOME,
        semconv.TASK_OUTCOME,
        semconv.CANCEL_ORIGIN,
        semconv.VIOLATION_KIND,
    }
    assert spanmetrics["namespace"] == "traces.span.metrics"
    assert spanmetrics["histogram"]["unit"] == "s"


# --- grafana ------------------------------------------------------------------------------


def test_datasources_have_fixed_uids() -> None:
    datasources = {d["uid"]: d for d in load(DATASOURCES)["datasources"]}
    assert set(datasources) == {PROMETHEUS_UID, JAEGER_UID}
    assert datasources[PROMETHEUS_UID]["type"] == "prometheus"
    assert datasources[PROMETHEUS_UID]["url"] == "http://prometheus:9090"
    assert datasources[JAEGER_UID]["type"] == "jaeger"
    assert datasources[JAEGER_UID]["url"] == "http://jaeger:16686"


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    (provider,) = load(DASHBOARD_PROVIDERS)["providers"]
    grafana = load(COMPOSE)["services"]["grafana"]
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_dashboard_panels_refids_and_datasources() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    queries = 0
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == PROMETHEUS_UID, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == PROMETHEUS_UID
            assert target["expr"].strip()
            queries += 1
    assert queries >= 20
    (variable,) = dashboard()["templating"]["list"]
    assert variable["datasource"]["uid"] == PROMETHEUS_UID


def test_violation_panel_links_to_jaeger_search_by_kind() -> None:
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == "Violations by kind and service"]
    links = panel["fieldConfig"]["defaults"]["links"]
    external = [link for link in links if link.get("url")]
    (url,) = [urllib.parse.unquote(link["url"]) for link in external]
    parts = urllib.parse.urlsplit(url)
    assert parts.port == 16686 and parts.path == "/search"
    query = urllib.parse.parse_qs(parts.query)
    assert query["service"] == ["${__field.labels.job}"]
    assert json.loads(query["tags"][0]) == {
        semconv.VIOLATION_KIND: "${__field.labels.scopewatch_violation_kind}"
    }
    (internal,) = [link["internal"] for link in links if "internal" in link]
    assert internal["datasourceUid"] == JAEGER_UID
    assert internal["query"]["tags"].startswith(f"{semconv.VIOLATION_KIND}=")


def test_grafana_rules_match_prometheus_rules() -> None:
    prometheus = {
        rule["alert"]: rule
        for group in load(PROMETHEUS_RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    grafana = [rule for group in load(GRAFANA_ALERTS)["groups"] for rule in group["rules"]]
    assert len(prometheus) >= 4
    assert {rule["title"] for rule in grafana} == set(prometheus)
    panel_ids = {str(panel["id"]) for panel in dashboard()["panels"]}
    for rule in grafana:
        data = {item["refId"]: item for item in rule["data"]}
        assert len(data) == len(rule["data"])
        assert rule["condition"] in data
        queries = [item for item in rule["data"] if item["datasourceUid"] != "__expr__"]
        (query,) = queries
        assert query["datasourceUid"] == PROMETHEUS_UID
        assert query["model"]["refId"] == query["refId"]
        expressions = [item for item in rule["data"] if item["datasourceUid"] == "__expr__"]
        for item in expressions:
            assert item["model"]["expression"] in data
            assert item["model"]["refId"] == item["refId"]
        condition = data[rule["condition"]]["model"]
        assert condition["type"] == "threshold"
        assert condition["conditions"][0]["evaluator"] == {"type": "gt", "params": [0]}

        twin = prometheus[rule["title"]]
        assert normalize(query["model"]["expr"]) == normalize(twin["expr"])
        assert rule["for"] == twin["for"]
        assert rule["labels"] == twin["labels"]
        assert rule["noDataState"] == "OK"
        assert rule["annotations"]["__dashboardUid__"] == dashboard()["uid"]
        assert rule["annotations"]["__panelId__"] in panel_ids


# --- names in queries ---------------------------------------------------------------------


# DESIGN.md section 3: instrument kind of every metric.
CONTRACT_KINDS = {
    semconv.METRIC_VIOLATIONS: "counter",
    semconv.METRIC_SCOPES: "counter",
    semconv.METRIC_SCOPE_DURATION: "histogram",
    semconv.METRIC_TASKS: "counter",
    semconv.METRIC_TASK_DURATION: "histogram",
    semconv.METRIC_TASK_ACTIVE: "updowncounter",
    semconv.METRIC_LOCK_WAIT_DURATION: "histogram",
    semconv.METRIC_LOCK_HOLD_DURATION: "histogram",
    semconv.METRIC_LOCK_CONTENTIONS: "counter",
    semconv.METRIC_SESSION_ACTIVE: "updowncounter",
    semconv.METRIC_SESSION_DURATION: "histogram",
    semconv.METRIC_ALERTS: "counter",
}


def sdk_kinds() -> dict[str, str]:
    """Kinds of the instruments ``Instruments`` creates, read back from a real SDK."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = Instruments(provider.get_meter("contract"))
    instruments.scope_counts[("anyio.move_on_after", "ok")] = 1
    instruments.task_counts["ok"] = 1
    for instrument in vars(instruments).values():
        if hasattr(instrument, "add"):
            instrument.add(1, {})
        elif hasattr(instrument, "record"):
            instrument.record(0.1, {})
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    kinds = {}
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        if isinstance(metric.data, Histogram):
            assert metric.unit == semconv.UNIT_SECONDS
            kinds[metric.name] = "histogram"
        elif isinstance(metric.data, Sum):
            kinds[metric.name] = "counter" if metric.data.is_monotonic else "updowncounter"
    return kinds


def test_contract_kinds_match_the_instruments() -> None:
    kinds = sdk_kinds()
    assert len(kinds) >= 10
    assert kinds[semconv.METRIC_SCOPES] == kinds[semconv.METRIC_TASKS] == "counter"
    for name, kind in kinds.items():
        assert CONTRACT_KINDS[name] == kind, name


def contract_prometheus_names() -> tuple[set[str], set[str]]:
    """(metric names, label names) of the contract, as Prometheus spells them.

    The conversion is the Collector's prometheus exporter's (and the Python one's): dots to
    underscores, ``_total`` on counters, ``_seconds`` on histograms in ``s`` plus their
    ``_bucket``/``_count``/``_sum`` series, nothing on up-down counters.
    """
    metrics = set()
    for name, kind in CONTRACT_KINDS.items():
        base = name.replace(".", "_")
        if kind == "histogram":
            metrics |= {f"{base}_seconds_{suffix}" for suffix in ("bucket", "count", "sum")}
        elif kind == "counter":
            metrics.add(f"{base}_total")
        else:
            metrics.add(base)
    labels = {
        value.replace(".", "_")
        for name, value in vars(semconv).items()
        if name.isupper() and isinstance(value, str) and value.startswith("scopewatch.")
    }
    return metrics, labels


def all_queries() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [r["expr"] for g in load(PROMETHEUS_RULES)["groups"] for r in g["rules"]]
    exprs += [
        item["model"]["expr"]
        for group in load(GRAFANA_ALERTS)["groups"]
        for rule in group["rules"]
        for item in rule["data"]
        if "expr" in item["model"]
    ]
    exprs.append(dashboard()["templating"]["list"][0]["definition"])
    return exprs


def test_queries_use_only_contract_names() -> None:
    metrics, labels = contract_prometheus_names()
    assert "scopewatch_violations_total" in metrics
    assert "scopewatch_lock_wait_duration_seconds_bucket" in metrics
    assert "scopewatch_task_active" in metrics
    assert {"scopewatch_scopes_total", "scopewatch_tasks_total"} <= metrics
    for expr in all_queries():
        for token in re.findall(r"\bscopewatch_\w+", expr):
            assert token in metrics | labels, f"{token!r} in {expr!r} is not a contract name"


@pytest.mark.parametrize("metric", sorted(CONTRACT_KINDS))
def test_dashboard_shows_every_contract_metric(metric: str) -> None:
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    assert re.search(rf"\b{metric.replace('.', '_')}(_total|_seconds_\w+)?\b", exprs), metric
